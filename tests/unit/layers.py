#!/usr/bin/env python3
"""The library's rooms and their arrows (doc/architecture.md), checked on
the objects of libjitsu.a: which file calls a function (or reads data) that
another file defines. A file may use files of its own room and of the
rooms below it, never one above; and no circle of files that use each
other spans more than two files. TAP output, one test per rule."""
import collections
import subprocess
import sys

# Lowest first. A member "libjitsu_core_vm.c.o" is in room "core".
ROOMS = ["base", "core", "config", "chan", "backends", "control", "ctx"]


def room_of(member):
    name = member.removeprefix("libjitsu_").removesuffix(".c.o")
    for r in ROOMS:
        if name == r or name.startswith(r + "_"):
            return r, name
    return None, name


def read_archive(path):
    out = subprocess.run(["nm", path], capture_output=True, text=True,
                         check=True).stdout
    defs, uses, member = {}, collections.defaultdict(set), None
    for line in out.splitlines():
        if line.endswith(".o:"):
            member = room_of(line[:-1])[1]
            uses[member]
            continue
        f = line.split()
        if len(f) == 3 and f[1] in "TDBRV":
            defs[f[2]] = member
        elif len(f) == 2 and f[0] == "U":
            uses[member].add(f[1])
    edges = collections.defaultdict(lambda: collections.defaultdict(set))
    for m, syms in uses.items():
        for s in syms:
            if s in defs and defs[s] != m:
                edges[m][defs[s]].add(s)
    return list(uses), edges


def circles(nodes, edges):
    """Strongly connected components (Tarjan), those of 2 files or more."""
    index, low, stack, on, found, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return found


def main():
    nodes, edges = read_archive(sys.argv[1])
    print("1..3")
    unknown = [m for m in nodes if room_of("libjitsu_" + m)[0] is None]
    print(("ok" if not unknown else "not ok") +
          " 1 - every file of the library is in a room" +
          ("" if not unknown else ": not in one: " + ", ".join(unknown)))
    up = []
    for a in sorted(edges):
        ra = ROOMS.index(room_of("libjitsu_" + a)[0] or "ctx")
        for b, syms in sorted(edges[a].items()):
            rb = ROOMS.index(room_of("libjitsu_" + b)[0] or "ctx")
            if rb > ra:
                up.append(f"{a} -> {b} ({', '.join(sorted(syms)[:4])})")
    print(("ok" if not up else "not ok") +
          " 2 - no file uses a room above its own")
    for u in up:
        print("#   " + u)
    wide = [c for c in circles(nodes, edges) if len(c) > 2]
    print(("ok" if not wide else "not ok") +
          " 3 - no circle of files that use each other spans more than two")
    for c in wide:
        print("#   " + " <-> ".join(c))
    return 1 if unknown or up or wide else 0


if __name__ == "__main__":
    sys.exit(main())
