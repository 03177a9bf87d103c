"""The Python peer of the cluster figures (benches/figures/cluster.rs): RQ, a
Redis job queue, on its own redis-server with three `rq worker`s (each
forks a work horse per job, RQ's crash isolation, as each agent runs tasks
in a worker process), measured like the Rust figures: the same task, the
same counts, the same chunking.

    python3 xtask/py/cluster_peer.py NAME    prints the figure's value

RQ is installed from PyPI into a virtualenv under the cargo target dir the
first time; without network access the figure fails (and `cargo xtask
bench` shows no peer value).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET = os.environ.get('CARGO_TARGET_DIR') or os.path.join(ROOT, 'target')
VENV = os.path.join(TARGET, 'py-cluster-peer')
AGENTS = 3


def square(x):
    return x * x


def squares(xs):
    return [x * x for x in xs]


def ensure_rq():
    """The virtualenv's python, with RQ installed."""
    python = os.path.join(VENV, 'bin', 'python')
    marker = os.path.join(VENV, '.rq-installed')
    if not os.path.exists(marker):
        subprocess.run([sys.executable, '-m', 'venv', VENV], check=True)
        subprocess.run([python, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', 'rq'],
                       check=True)
        open(marker, 'w').close()
    return python


def wait_ping(path, limit=10.0):
    end = time.monotonic() + limit
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(path)
                s.sendall(b'PING\r\n')
                if s.recv(7) == b'+PONG\r\n':
                    return
        except OSError:
            pass
        if time.monotonic() > end:
            raise RuntimeError('redis-server did not answer PING')
        time.sleep(0.01)


def inside(name, url):
    """Runs in the virtualenv: measures one figure against the workers."""
    from redis import Redis
    from rq import Queue, Worker

    conn = Redis.from_url(url)
    end = time.monotonic() + 30
    while len(Worker.all(connection=conn)) < AGENTS:
        if time.monotonic() > end:
            raise RuntimeError('rq workers did not come up')
        time.sleep(0.02)
    q = Queue('bench', connection=conn)

    def result(job):
        r = job.latest_result(timeout=60)
        if r is None or r.type != r.Type.SUCCESSFUL:
            raise RuntimeError(f'job {job.id} failed: {r and r.exc_string}')
        return r.return_value

    if name == 'cluster_apply_roundtrip_us':
        n = 200  # RQ forks per job: fewer rounds, the same per-call figure
        for i in range(10):
            result(q.enqueue('cluster_peer.square', i))
        t = time.perf_counter()
        for i in range(n):
            assert result(q.enqueue('cluster_peer.square', i)) == i * i
        return (time.perf_counter() - t) / n * 1e6
    if name == 'cluster_map_tasks_per_s':
        n, chunk = 100_000, 1_000
        result(q.enqueue('cluster_peer.squares', list(range(chunk))))
        t = time.perf_counter()
        jobs = q.enqueue_many([Queue.prepare_data('cluster_peer.squares', (list(range(s, s + chunk)),))
                               for s in range(0, n, chunk)])
        out = [v for job in jobs for v in result(job)]
        value = n / (time.perf_counter() - t)
        assert out == [i * i for i in range(n)]
        return value
    raise SystemExit(f'unknown figure {name}')


def main(argv):
    if argv[:1] == ['--inside']:
        print(inside(argv[1], argv[2]), flush=True)
        return 0
    name = argv[0]
    python = ensure_rq()
    rq = os.path.join(VENV, 'bin', 'rq')
    tmp = tempfile.mkdtemp(prefix='mp-bench-rq-')
    sock = os.path.join(tmp, 'redis.sock')
    url = f'unix://{sock}'
    children = []
    try:
        children.append(subprocess.Popen(
            ['redis-server', '--port', '0', '--unixsocket', sock, '--unixsocketperm', '700',
             '--save', '', '--appendonly', 'no', '--dir', tmp], stdout=subprocess.DEVNULL))
        wait_ping(sock)
        env = dict(os.environ, PYTHONPATH=HERE)
        for _ in range(AGENTS):
            children.append(subprocess.Popen([rq, 'worker', 'bench', '--url', url, '--quiet'], env=env,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out = subprocess.run([python, os.path.abspath(__file__), '--inside', name, url], env=env,
                             check=True, capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)
    finally:
        for c in reversed(children):
            c.send_signal(signal.SIGTERM)
            try:
                c.wait(timeout=10)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
