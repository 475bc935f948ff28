#!/usr/bin/env python3
"""Lists the import circles between the modules of a Rust source tree (default: src).

Every `crate::` and `super::` path (with `{...}` groups expanded) is resolved to the longest
prefix that is a module file; inline `#[cfg(test)] mod` blocks are left out. Prints each
strongly connected component of more than one module, marked CROSS-FOLDER when its files lie
in more than one folder, with the edges inside it, then the pairs of folders that import
each other. Usage: python3 .ci/import-circles.py [--check] [src]
With --check it exits 1 when any circle spans folders (what .ci/run enforces).
"""
import os, re, sys
from collections import defaultdict
args = [a for a in sys.argv[1:] if a != '--check']
check = '--check' in sys.argv[1:]
root = args[0] if args else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == 'mod': parts = parts[:-1]
            if parts in (['lib'], ['main']): mod = ()
            else: mod = tuple(parts)
            files[mod] = p
def resolve(segs):
    # longest prefix that is a module file
    for n in range(len(segs), 0, -1):
        if tuple(segs[:n]) in files: return tuple(segs[:n])
    return None
def strip_comments(s):
    s = re.sub(r'//[^\n]*', '', s)
    # test modules are dev-only: cut inline `#[cfg(test)] mod x {` to the end of the file
    m = re.search(r'#\[cfg\(test\)\]\s*(pub(\(\w+\))?\s+)?mod\s+\w+\s*\{', s)
    if m: s = s[:m.start()]
    return s
def expand(prefix, body):
    # body: content inside braces, split at top level commas
    out, depth, cur = [], 0, ''
    for ch in body:
        if ch == '{': depth += 1
        if ch == '}': depth -= 1
        if ch == ',' and depth == 0: out.append(cur); cur = ''
        else: cur += ch
    out.append(cur)
    paths = []
    for item in out:
        item = item.strip()
        if not item: continue
        m = re.match(r'([\w:]*?)(::)?\{(.*)\}$', item, re.S)
        if m and '{' in item:
            sub = [x for x in m.group(1).split('::') if x]
            paths += expand(prefix + sub, m.group(3))
        else:
            segs = [x for x in item.split(' as ')[0].strip().split('::') if x]
            if segs == ['self']: segs = []
            paths.append(prefix + segs)
    return paths
edges = defaultdict(set)
for mod, p in files.items():
    s = strip_comments(open(p).read())
    paths = []
    for m in re.finditer(r'\b(crate|super)((?:::\w+)*)(::\{)?', s):
        base = m.group(1)
        segs = [x for x in m.group(2).split('::') if x]
        if m.group(3):
            # find matching brace
            i = m.end(); depth = 1; j = i
            while depth and j < len(s):
                if s[j] == '{': depth += 1
                elif s[j] == '}': depth -= 1
                j += 1
            groups = expand(segs, s[i:j-1])
        else:
            groups = [segs]
        for g in groups:
            if base == 'crate': full = g
            else:
                # `super` of module m is m's parent (a mod.rs is the module of its folder)
                parent = list(mod[:-1])
                sup = g
                cur = parent
                while sup and sup[0] == 'super':
                    cur = cur[:-1]; sup = sup[1:]
                full = cur + sup
            t = resolve(full)
            if t is not None and t != mod and t != ():
                edges[mod].add(t)
def folder(mod):
    p = files[mod]
    return os.path.dirname(os.path.relpath(p, root)) or '.'
# Tarjan SCC
idx, low, on, st, sccs, counter = {}, {}, set(), [], [], [0]
sys.setrecursionlimit(10000)
def strong(v):
    idx[v] = low[v] = counter[0]; counter[0] += 1; st.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in idx: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = st.pop(); on.discard(w); c.append(w)
            if w == v: break
        sccs.append(c)
for v in files:
    if v not in idx: strong(v)
bad = 0
for c in sccs:
    if len(c) > 1:
        fs = {folder(m) for m in c}
        tag = 'CROSS-FOLDER' if len(fs) > 1 else 'same-folder'
        if len(fs) > 1: bad += 1
        print(tag, sorted('::'.join(m) for m in c))
        for m in c:
            for t in edges[m]:
                if t in c: print('   ', '::'.join(m), '->', '::'.join(t))
print('files', len(files), 'edges', sum(len(v) for v in edges.values()), 'cross-folder cycles', bad)
# folder-level graph
fe = defaultdict(set)
for m, ts in edges.items():
    for t in ts:
        a, b = folder(m), folder(t)
        if a != b: fe[a].add(b)
print('folder-level 2-cycles:')
for a in sorted(fe):
    for b in sorted(fe[a]):
        if a < b and a in fe.get(b, ()): print('  ', a, '<->', b)
if check and bad:
    print(f'FAILED: {bad} import circle(s) span folders (ARCHITECTURE.md, "Invariants")', file=sys.stderr)
    sys.exit(1)
