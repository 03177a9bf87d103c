"""CPython's side of `cargo xtask bench`.

Each figure here measures, with Python's own `multiprocessing`, exactly what
the Rust figure of the same name in `benches/figures/` measures: the same
workload, the same number of operations, the same warm-up, the same clock
boundaries. When a Rust figure changes, change its twin here.

    python3 xtask/py/baseline.py [--json] [--list] [NAME ...]

Prints `name value unit` per figure, or with --json one object per line:
{"name": ..., "unit": ..., "better": ..., "cpython": ...}. A figure that
fails prints its traceback on stderr and "cpython": null, and the others
still run. The start method is 'fork' (CPython 3.11's default on Linux)
except where a figure names another.
"""
import json
import multiprocessing as mp
import os
import sys
import time
import traceback

FIGURES = {}


def figure(unit, better):
    """Registers a figure under its function's name (the published name)."""
    def register(fn):
        FIGURES[fn.__name__] = (fn, unit, better)
        return fn
    return register


# ---- targets (module level, so every start method can import them) ----

def noop():
    pass


def square(x):
    return x * x


def prime_factors(n):
    """The seeds' prime_factors, unchanged (benches/figures/pool.rs twins it)."""
    factors = []
    for i in range(2, int(n**0.5) + 1):
        while n % i == 0:
            factors.append(i)
            n //= i
    if n > 2:
        factors.append(n)
    return factors


def process_range(start, end):
    for i in range(start, end):
        prime_factors(i)


def rss_kib():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def read_until_done(conn):
    while conn.recv() is not None:
        pass


def read_bytes_until_done(conn):
    while conn.recv_bytes() != b'DONE':
        pass


def echo(conn):
    while (m := conn.recv()) is not None:
        conn.send(m)


def get_until_done(q):
    while q.get() is not None:
        pass


def get_and_mark_done(q):
    while True:
        q.get()
        q.task_done()


def answer_pings(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def pass_barrier(barrier, n):
    for _ in range(n):
        barrier.wait()


def started(target, *args, daemon=None):
    p = mp.Process(target=target, args=args, daemon=daemon)
    p.start()
    return p


# ---- benches/figures/process.rs ----

def start_join(method, n):
    ctx = mp.get_context(method)

    def once():
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    once()
    t = time.perf_counter()
    for _ in range(n):
        once()
    return (time.perf_counter() - t) / n * 1e6


@figure('us', 'lower')
def process_start_join_forkserver_us():
    return start_join('forkserver', 300)


@figure('us', 'lower')
def process_start_join_spawn_us():
    return start_join('spawn', 30)


# ---- benches/figures/pool.rs ----

@figure('us', 'lower')
def pool_apply_roundtrip_us(n=2_000):
    with mp.Pool(os.cpu_count()) as pool:
        for i in range(100):
            pool.apply(square, (i,))
        t = time.perf_counter()
        for i in range(n):
            pool.apply(square, (i,))
        return (time.perf_counter() - t) / n * 1e6


@figure('us', 'lower')
def pool_apply_roundtrip_shm_us(n=2_000):
    """CPython's Pool has no shared-memory path: its twin is its only one."""
    return pool_apply_roundtrip_us(n)


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
def pool_cpu_speedup(pairs=3):
    """Serial and parallel runs interleaved in pairs; the median of the
    pairs' ratios (as benches/figures/pool.rs measures it)."""
    lo, hi, k = 1_000_000_000, 1_000_004_000, 16
    step = (hi - lo) // k
    chunks = [(lo + i * step, lo + (i + 1) * step) for i in range(k)]
    ratios = []
    with mp.Pool(os.cpu_count()) as pool:
        for _ in range(pairs):
            t = time.perf_counter()
            for a, b in chunks:
                process_range(a, b)
            serial = time.perf_counter() - t
            t = time.perf_counter()
            pool.starmap(process_range, chunks)
            ratios.append(serial / (time.perf_counter() - t))
    return sorted(ratios)[pairs // 2]


@figure('KiB', 'lower')
def worker_idle_rss_kib():
    with mp.Pool(1) as pool:
        return pool.apply(rss_kib)


# ---- benches/figures/pipe.rs ----

def pipe_msgs(n):
    a, b = mp.Pipe()
    p = started(read_until_done, a)
    t = time.perf_counter()
    for i in range(n):
        b.send(i)
    b.send(None)
    p.join()
    return n / (time.perf_counter() - t)


@figure('msg/s', 'higher')
def pipe_msgs_per_s():
    """multiproc batches these (`feed`); CPython has only `send`."""
    return pipe_msgs(300_000)


@figure('msg/s', 'higher')
def pipe_send_msgs_per_s():
    """One awaited `send` per message on the Rust side: CPython's `send`."""
    return pipe_msgs(300_000)


@figure('GiB/s', 'higher')
def pipe_1mib_gib_per_s(n=500):
    a, b = mp.Pipe()
    p = started(read_bytes_until_done, a)
    buf = b'x' * (1 << 20)
    t = time.perf_counter()
    for _ in range(n):
        b.send_bytes(buf)
    b.send_bytes(b'DONE')
    p.join()
    return n / 1024 / (time.perf_counter() - t)


@figure('us', 'lower')
def pipe_roundtrip_us(n=20_000):
    a, b = mp.Pipe()
    p = started(echo, a)
    b.send(0)
    b.recv()
    t = time.perf_counter()
    for i in range(n):
        b.send(i)
        b.recv()
    dt = time.perf_counter() - t
    b.send(None)
    p.join()
    return dt / n * 1e6


@figure('us', 'lower')
def pipe_roundtrip_shm_us(n=20_000):
    """CPython has no shared-memory Pipe: its twin is its only one."""
    return pipe_roundtrip_us(n)


@figure('msg/s', 'higher')
def queue_msgs_per_s(n=300_000):
    q = mp.Queue()
    p = started(get_until_done, q)
    t = time.perf_counter()
    for i in range(n):
        q.put(i)
    q.put(None)
    p.join()
    return n / (time.perf_counter() - t)


@figure('msg/s', 'higher')
def joinable_queue_msgs_per_s(n=200_000):
    q = mp.JoinableQueue()
    p = started(get_and_mark_done, q, daemon=True)
    t = time.perf_counter()
    for i in range(n):
        q.put(i)
    q.join()
    dt = time.perf_counter() - t
    p.terminate()
    p.join()
    return n / dt


# ---- benches/figures/sync.rs ----

@figure('ns', 'lower')
def lock_uncontended_ns(n=2_000_000):
    lock = mp.Lock()
    t = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t) / n * 1e9


@figure('us', 'lower')
def event_wake_us(n=20_000):
    ping, pong = mp.Event(), mp.Event()
    p = started(answer_pings, ping, pong, n)
    t = time.perf_counter()
    for _ in range(n):
        ping.set()
        pong.wait()
        pong.clear()
    dt = time.perf_counter() - t
    p.join()
    return dt / (2 * n) * 1e6


@figure('us', 'lower')
def async_event_wake_us(n=20_000):
    # multiprocessing has no async Event: the twin is the same ping-pong.
    return event_wake_us(n)


@figure('msg/s', 'higher')
def queue_leased_msgs_per_s(n=200_000):
    # No leases in multiprocessing: the twin is get + task_done.
    return joinable_queue_msgs_per_s(n)


@figure('us', 'lower')
def barrier_pass_us(n=20_000):
    barrier = mp.Barrier(2)
    p = started(pass_barrier, barrier, n)
    t = time.perf_counter()
    for _ in range(n):
        barrier.wait()
    dt = time.perf_counter() - t
    p.join()
    return dt / n * 1e6


# ---- benches/figures/manager.rs ----

@figure('us', 'lower')
def manager_proxy_call_us(n=5_000):
    with mp.Manager() as manager:
        d = manager.dict()
        d['k'] = 0
        t = time.perf_counter()
        for i in range(n):
            d['k'] = i
        return (time.perf_counter() - t) / n * 1e6


# ---- the cluster (issue 12): RQ on Redis is the Python peer; see cluster_peer.py ----

def cluster_peer(name):
    """Runs xtask/py/cluster_peer.py (its own redis-server and RQ workers)."""
    import subprocess
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cluster_peer.py')
    out = subprocess.run([sys.executable, script, name], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


@figure('us', 'lower')
def cluster_apply_roundtrip_us():
    return cluster_peer('cluster_apply_roundtrip_us')


@figure('task/s', 'higher')
def cluster_map_tasks_per_s():
    return cluster_peer('cluster_map_tasks_per_s')


def main(argv):
    flags = {a for a in argv if a.startswith('--')}
    if flags - {'--json', '--list'}:
        sys.exit(f'usage: {sys.argv[0]} [--json] [--list] [NAME ...]')
    if '--list' in flags:
        print('\n'.join(FIGURES))
        return 0
    names = [a for a in argv if not a.startswith('--')] or list(FIGURES)
    mp.set_start_method('fork')
    failed = 0
    for name in names:
        if name not in FIGURES:
            print(f'unknown figure {name}', file=sys.stderr)
            failed += 1
            continue
        fn, unit, better = FIGURES[name]
        try:
            value = round(fn(), 3)
        except Exception:
            traceback.print_exc()
            value, failed = None, failed + 1
        if '--json' in flags:
            line = {'name': name, 'unit': unit, 'better': better, 'cpython': value}
            print(json.dumps(line), flush=True)
        else:
            print(f'{name} {value} {unit}', flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
