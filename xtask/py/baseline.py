"""CPython's side of `cargo xtask bench`: each figure measured with Python's
own multiprocessing, with the same workload as benches/figures/*.rs.

    python3 baseline.py [--json] [NAME ...]

Prints `name value unit` per figure, or one JSON object per line.
"""
import json
import multiprocessing as mp
import os
import sys
import time

FIGURES = {}


def figure(unit, better):
    def register(fn):
        FIGURES[fn.__name__] = (fn, unit, better)
        return fn
    return register


def per_op(seconds, n, scale):
    return seconds / n * scale


# ---- workers (module level so every start method can find them) ----

def nothing():
    pass


def square(x):
    return x * x


def drain_objects(conn):
    while conn.recv() != 'DONE':
        pass


def drain_bytes(conn):
    while conn.recv_bytes() != b'DONE':
        pass


def echo_until_none(conn):
    while (m := conn.recv()) is not None:
        conn.send(m)


def drain_queue(q):
    while q.get() != 'DONE':
        pass


def drain_joinable(q):
    while True:
        q.get()
        q.task_done()


def factorize(n):
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    if n > 1:
        out.append(n)
    return out


def factorize_range(lo, hi):
    for n in range(lo, hi):
        factorize(n)


def rss_kib():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])


def answer_pings(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def pass_barrier(barrier, n):
    for _ in range(n):
        barrier.wait()


# ---- figures ----

def start_join(method, n):
    ctx = mp.get_context(method)
    warm = ctx.Process(target=nothing)
    warm.start()
    warm.join()
    t = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=nothing)
        p.start()
        p.join()
    return per_op(time.perf_counter() - t, n, 1e6)


@figure('us', 'lower')
def process_start_join_forkserver_us():
    return start_join('forkserver', 200)


@figure('us', 'lower')
def process_start_join_spawn_us():
    return start_join('spawn', 20)


@figure('us', 'lower')
def pool_apply_roundtrip_us(n=2000):
    with mp.Pool(os.cpu_count()) as pool:
        pool.apply(square, (1,))
        t = time.perf_counter()
        for i in range(n):
            pool.apply(square, (i,))
        return per_op(time.perf_counter() - t, n, 1e6)


@figure('task/s', 'higher')
def pool_map_chunk1_tasks_per_s(n=50_000):
    with mp.Pool(os.cpu_count()) as pool:
        pool.map(square, range(100), 1)
        t = time.perf_counter()
        pool.map(square, range(n), 1)
        return n / (time.perf_counter() - t)


@figure('task/s', 'higher')
def pool_map_auto_tasks_per_s(n=1_000_000):
    with mp.Pool(os.cpu_count()) as pool:
        pool.map(square, range(100))
        t = time.perf_counter()
        pool.map(square, range(n))
        return n / (time.perf_counter() - t)


@figure('x', 'higher')
def pool_cpu_speedup():
    lo, hi, parts = 1_000_000_000, 1_000_004_000, 16
    step = (hi - lo) // parts
    ranges = [(lo + i * step, lo + (i + 1) * step) for i in range(parts)]
    t = time.perf_counter()
    for r in ranges:
        factorize_range(*r)
    serial = time.perf_counter() - t
    with mp.Pool(os.cpu_count()) as pool:
        t = time.perf_counter()
        pool.starmap(factorize_range, ranges)
        return serial / (time.perf_counter() - t)


@figure('KiB', 'lower')
def worker_idle_rss_kib():
    with mp.Pool(1) as pool:
        return pool.apply(rss_kib)


@figure('msg/s', 'higher')
def pipe_msgs_per_s(n=300_000):
    reader_end, writer_end = mp.Pipe()
    p = mp.Process(target=drain_objects, args=(reader_end,))
    p.start()
    t = time.perf_counter()
    for i in range(n):
        writer_end.send(i)
    writer_end.send('DONE')
    p.join()
    return n / (time.perf_counter() - t)


@figure('GiB/s', 'higher')
def pipe_1mib_gib_per_s(n=500):
    reader_end, writer_end = mp.Pipe()
    p = mp.Process(target=drain_bytes, args=(reader_end,))
    p.start()
    payload = b'\x01' * (1 << 20)
    t = time.perf_counter()
    for _ in range(n):
        writer_end.send_bytes(payload)
    writer_end.send_bytes(b'DONE')
    p.join()
    return n / 1024 / (time.perf_counter() - t)


@figure('us', 'lower')
def pipe_roundtrip_us(n=20_000):
    child_end, our_end = mp.Pipe()
    p = mp.Process(target=echo_until_none, args=(child_end,))
    p.start()
    our_end.send(0)
    our_end.recv()
    t = time.perf_counter()
    for i in range(n):
        our_end.send(i)
        our_end.recv()
    took = time.perf_counter() - t
    our_end.send(None)
    p.join()
    return per_op(took, n, 1e6)


@figure('msg/s', 'higher')
def queue_msgs_per_s(n=300_000):
    q = mp.Queue()
    p = mp.Process(target=drain_queue, args=(q,))
    p.start()
    t = time.perf_counter()
    for i in range(n):
        q.put(i)
    q.put('DONE')
    p.join()
    return n / (time.perf_counter() - t)


@figure('msg/s', 'higher')
def joinable_queue_msgs_per_s(n=200_000):
    q = mp.JoinableQueue()
    p = mp.Process(target=drain_joinable, args=(q,), daemon=True)
    p.start()
    t = time.perf_counter()
    for i in range(n):
        q.put(i)
    q.join()
    took = time.perf_counter() - t
    p.terminate()
    p.join()
    return n / took


@figure('ns', 'lower')
def lock_uncontended_ns(n=1_000_000):
    lock = mp.Lock()
    t = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return per_op(time.perf_counter() - t, n, 1e9)


@figure('us', 'lower')
def event_wake_us(n=5_000):
    ping, pong = mp.Event(), mp.Event()
    p = mp.Process(target=answer_pings, args=(ping, pong, n))
    p.start()
    t = time.perf_counter()
    for _ in range(n):
        ping.set()
        pong.wait()
        pong.clear()
    took = time.perf_counter() - t
    p.join()
    return per_op(took, 2 * n, 1e6)


@figure('us', 'lower')
def barrier_pass_us(n=5_000):
    barrier = mp.Barrier(2)
    p = mp.Process(target=pass_barrier, args=(barrier, n))
    p.start()
    t = time.perf_counter()
    for _ in range(n):
        barrier.wait()
    took = time.perf_counter() - t
    p.join()
    return per_op(took, n, 1e6)


@figure('us', 'lower')
def manager_proxy_call_us(n=5_000):
    with mp.Manager() as manager:
        d = manager.dict()
        d['k'] = 0
        t = time.perf_counter()
        for i in range(n):
            d['k'] = i
        return per_op(time.perf_counter() - t, n, 1e6)


def main(argv):
    as_json = '--json' in argv
    names = [a for a in argv if not a.startswith('--')] or list(FIGURES)
    mp.set_start_method('fork')
    for name in names:
        if name not in FIGURES:
            print(f'unknown figure {name}', file=sys.stderr)
            continue
        fn, unit, better = FIGURES[name]
        value = fn()
        if as_json:
            print(json.dumps({'name': name, 'unit': unit, 'better': better, 'cpython': round(value, 3)}), flush=True)
        else:
            print(f'{name} {value:.3f} {unit}', flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
