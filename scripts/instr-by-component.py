#!/usr/bin/env python3
"""Instructions per request by component, from the callgrind dumps of scripts/instr-per-request.sh.

usage: scripts/instr-by-component.py DIR:MODE[=label] ...   (e.g. /tmp/instr-x:grpc-token=gRPC)

For each column, per request = (cost in DIR/MODE.N2.out - cost in DIR/MODE.N1.out) / (N2 - N1),
with N1/N2 (or the echo's counted requests) read from DIR/summary.txt. A function's self cost
goes to the crate its name starts with (inlined code counts where it was inlined). The writer
row is the inclusive cost of the ledger writer thread's `Writer::run`; the request path is the
total minus it. Prints a markdown table.
"""
import collections
import re
import sys

WRITER = 'tokenledger::ledger::writer::Writer::run'
ROWS = ['h2 (frames, HPACK, streams)', 'hyper + httparse', 'http (header maps, bodies)', 'tonic + prost',
        'axum + tower', 'tokio', 'memcpy/memset/memcmp', 'allocator', 'sha256/HMAC (ring)', 'redb',
        'tokenledger', 'serde_json + base64', 'std/core/other']
CRATES = {'h2': 0, 'hyper': 1, 'hyper_util': 1, 'httparse': 1, 'http': 2, 'http_body': 2, 'http_body_util': 2,
          'tonic': 3, 'prost': 3, 'tokio_util': 3, 'axum': 4, 'axum_core': 4, 'tower': 4, 'tower_service': 4,
          'tokio': 5, 'redb': 9, 'tokenledger': 10, 'serde_json': 11, 'base64': 11}
ALLOCATOR = re.compile(r'(malloc|free|realloc|calloc|_int_|malloc_consolidate|unlink_chunk|tcache|'
                       r'__rust_alloc|__rust_dealloc|__rust_realloc|__rustc::__r|_?mi_|__libc_malloc|__libc_free|cfree)')


def component(name):
    if name is None:
        return ROWS[-1]
    if re.search(r'mem(cpy|move|set|cmp)', name):
        return ROWS[6]
    if ALLOCATOR.match(name):
        return ROWS[7]
    if name.startswith('ring') or 'sha256' in name:
        return ROWS[8]
    m = re.match(r'^<?(?:&(?:mut )?)?(?:dyn )?([A-Za-z_][A-Za-z0-9_]*)', name)
    return ROWS[CRATES.get(m.group(1) if m else '', len(ROWS) - 1)]


def parse(path):
    """Self cost per function and inclusive cost per function (self plus calls to others)."""
    names = {}
    self_cost = collections.Counter()
    calls_cost = collections.Counter()
    fn = callee = None
    in_call = False

    def name(rest):
        m = re.match(r'\((\d+)\)(?: (.*))?', rest)
        if not m:
            return rest
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), '?' + m.group(1))

    with open(path, errors='replace') as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in '+-*':
                parts = line.split()
                if len(parts) < 2:
                    continue
                cost = int(parts[1])
                if in_call:
                    if callee != fn:
                        calls_cost[fn] += cost
                    in_call = False
                else:
                    self_cost[fn] += cost
            elif line.startswith('fn='):
                fn = name(line[3:].rstrip('\n'))
            elif line.startswith('cfn='):
                callee = name(line[4:].rstrip('\n'))
            elif line.startswith('calls='):
                in_call = True
    inclusive = collections.Counter({k: self_cost[k] + calls_cost[k] for k in set(self_cost) | set(calls_cost)})
    return self_cost, inclusive


def requests(d, mode):
    s = open(f'{d}/summary.txt').read()
    if mode == 'tonic-echo':
        m = re.search(r'mode=tonic-echo requests_n1=(\d+) requests_n2=(\d+)', s)
    else:
        m = re.search(r'n1=(\d+) n2=(\d+)', s)
    return int(m.group(2)) - int(m.group(1))


def main(args):
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    cols = []
    for arg in args:
        where, _, label = arg.partition('=')
        d, mode = where.rsplit(':', 1)
        n = requests(d, mode)
        (s1, i1), (s2, i2) = parse(f'{d}/{mode}.N1.out'), parse(f'{d}/{mode}.N2.out')
        rows = collections.Counter()
        for k, v in s2.items():
            rows[component(k)] += (v - s1.get(k, 0)) / n
        writer = (i2.get(WRITER, 0) - i1.get(WRITER, 0)) / n
        cols.append((label or where, rows, writer))
    k = lambda v: f'{v / 1000:.1f}k'
    print('| component | ' + ' | '.join(label for label, _, _ in cols) + ' |')
    print('|---' * (len(cols) + 1) + '|')
    for row in ROWS:
        print(f'| {row} | ' + ' | '.join(k(r.get(row, 0)) for _, r, _ in cols) + ' |')
    print('| **total** | ' + ' | '.join(f'**{k(sum(r.values()))}**' for _, r, _ in cols) + ' |')
    print('| of which the writer thread | ' + ' | '.join(k(w) for _, _, w in cols) + ' |')
    print('| **request path** | ' + ' | '.join(f'**{k(sum(r.values()) - w)}**' for _, r, w in cols) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
