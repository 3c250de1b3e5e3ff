"""pyeagle's loader fuzzer: mutated GGUF draft heads and targets, and mutated head checkpoints for
the converter, each case in its own process with a timeout.

    python tests/fuzz/fuzz.py --quick                       # ~300 cases on tiny files (CI: tests/test_fuzz.py)
    python tests/fuzz/fuzz.py --long --out fuzz-long.jsonl  # 10,000 head, 2,000 target, 1,000 checkpoint cases
    python tests/fuzz/fuzz.py --kinds head --n 500 --real   # the shipped head against the real default target

A case mutates one seed file (a GGUF, or one file of a checkpoint directory), then a fresh process
(forked from this one, which has imported pyeagle but loaded nothing) does what a user would:
loads the pair into an `Engine` and generates 4 tokens, or converts the checkpoint and then loads
and generates with the result. Outcomes:

    ok         loaded (converted) and generated tokens
    refused    a typed error (ModelFileError, FileNotFoundError, ConversionError) naming the mutated file
    untyped    any other exception, or a typed one that does not name the file
    no-tokens  loaded but generated nothing, or failed while generating
    crash      the process died (a signal, an abort) before reporting
    hang       still running at the timeout (killed)

The bar is 0 untyped, 0 no-tokens, 0 crash and 0 hang. Mutations of a GGUF come from its parsed
layout (tests/fuzz/gguf_sites.py): header counts, metadata key and string lengths, value types,
array types and lengths, scalar values, tensor names, n_dims, dims, types and offsets, set to
boundary values (0, 1, 2^31-1, 2^32-1, 2^63-1, 2^64-1, ...); bit flips (mostly in the metadata);
truncations; string bytes overwritten or copied from another token (duplicate vocabulary entries);
and combinations. Checkpoints: config.json fields deleted or given wrong types and extreme values,
corrupt JSON; safetensors header lengths, dtypes, shapes and data offsets; bit flips and truncations
of safetensors and PyTorch .bin (zip + pickle) files.

Results go to a JSON-lines file, one line per case; a rerun with the same --out skips the cases it
already has (long runs resume where they stopped). The summary is a table of outcomes per kind.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the tiny model and checkpoint writers
sys.path.insert(0, str(HERE))

from gguf_sites import Site, gguf_sites  # noqa: E402

OUTCOMES = ("ok", "refused", "untyped", "no-tokens", "crash", "hang")
BAD = ("untyped", "no-tokens", "crash", "hang")
KINDS = ("head", "target", "checkpoint")
PROMPT = [1, 20, 30, 40, 50, 60]  # token ids every seed vocabulary has (the tiny one has 400+)
BOUNDARY = [0, 1, 2, 3, 7, 8, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32,
            1 << 40, (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


# --- seeds ---------------------------------------------------------------------------------------

@dataclass
class Seeds:
    target: Path             # an intact target GGUF
    head: Path               # an intact head GGUF for it
    checkpoints: list[Path]  # intact head checkpoint directories for ck_target
    ck_target: Path          # the target the checkpoints were made for


def tiny_seeds(d: Path) -> Seeds:
    """Tiny files: a 2-layer Llama target (q8_0 weights, tied output: the shipped default's shape),
    an EAGLE-1/2 head with a reduced draft vocabulary, EAGLE-1/2 (safetensors, .bin) and EAGLE-3 checkpoints."""
    from eagle_checkpoints import target_dims, write_eagle3, write_eagle12
    from tiny_gguf import TinySpec, write_tiny_llama

    from pyeagle.convert import convert

    d.mkdir(parents=True, exist_ok=True)
    target = d / "target.gguf"
    if not target.exists():
        write_tiny_llama(target, TinySpec(n_layer=2, weight_type="q8_0", tied=True))
    dims = target_dims(target)
    cks = []
    try:
        import torch  # noqa: F401 - writes the .bin seed; without it there is none
        has_torch = True
    except ImportError:
        has_torch = False
    for name, writer, kw in (("eagle12-st", write_eagle12, dict(fmt="safetensors", draft_vocab=200)),
                             ("eagle12-bin", write_eagle12, dict(fmt="bin", dtype="bf16")),
                             ("eagle3-st", write_eagle3, dict(taps=[0, 1, 2], dtype="fp16"))):
        if name.endswith("-bin") and not has_torch:
            continue
        ck = d / name
        if not (ck / "config.json").exists():
            writer(ck, **dims, **kw)
        cks.append(ck)
    head = d / "head.gguf"
    if not head.exists():
        convert(cks[0], target, head, outtype="q8_0")
    return Seeds(target, head, cks, target)


def real_seeds(d: Path) -> Seeds:
    """The embedded default target (SmolLM2-135M-Instruct Q8_0) and the shipped head; checkpoints stay tiny."""
    from pyeagle import models

    tiny = tiny_seeds(d / "tiny")
    return Seeds(Path(models.default_target()), Path(models.default_head()), tiny.checkpoints, tiny.target)


# --- mutations -----------------------------------------------------------------------------------

def put_int(data: bytearray, site: Site, value: int) -> None:
    value &= (1 << (8 * site.size)) - 1
    data[site.offset: site.offset + site.size] = value.to_bytes(site.size, "little")


def boundary(rng: random.Random, site: Site, data: bytes) -> int:
    old = int.from_bytes(data[site.offset: site.offset + site.size], "little")
    choices = [v for v in BOUNDARY if v < (1 << (8 * site.size))] + [old + 1, old - 1, old * 2, old // 2, old + 32]
    return rng.choice(choices)


def mutate_gguf(data: bytes, rng: random.Random, sites: list[Site], data_offset: int) -> tuple[bytearray, str]:
    """One to three mutations; returns the bytes and a description."""
    out = bytearray(data)
    steps = []
    by_kind: dict[str, list[Site]] = {}
    for s in sites:
        by_kind.setdefault(s.kind, []).append(s)
    strings = by_kind.get("str_bytes", [])
    n_ops = 1 if rng.random() < 0.8 else rng.randint(2, 3)
    truncate_to = None
    for _ in range(n_ops):
        op = rng.choices(["int", "flip", "truncate", "string"], weights=[50, 25, 12, 13])[0]
        if op == "int":
            kind = rng.choice(sorted(k for k in by_kind if k != "str_bytes"))
            site = rng.choice(by_kind[kind])
            v = boundary(rng, site, out)
            put_int(out, site, v)
            steps.append(f"{kind}@{site.offset}={v}")
        elif op == "flip":
            end = data_offset if rng.random() < 0.75 else len(out)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(0, max(end, 1))
                out[pos] ^= 1 << rng.randrange(8)
            steps.append(f"flip<{end}")
        elif op == "truncate":
            end = data_offset + 64 if rng.random() < 0.6 else len(out)
            truncate_to = rng.randrange(0, min(end, len(out)))
            steps.append(f"truncate={truncate_to}")
        elif strings:
            s = rng.choice(strings)
            if rng.random() < 0.5:  # another string's bytes (same length): e.g. two equal tokens
                same = [t for t in strings if t.size == s.size and t.offset != s.offset]
                if same:
                    t = rng.choice(same)
                    out[s.offset: s.offset + s.size] = out[t.offset: t.offset + t.size]
                    steps.append(f"copy-string@{t.offset}->{s.offset}")
                    continue
            out[s.offset: s.offset + s.size] = bytes(rng.randrange(256) for _ in range(s.size))
            steps.append(f"random-string@{s.offset}")
    if truncate_to is not None:
        del out[truncate_to:]
    return out, " ".join(steps)


CONFIG_VALUES = [None, "x", "", -1, 0, 1, 3, 1.5, -1e9, 2 ** 31, 2 ** 63, 1e308, [], [1, 2], {}, {"type": "x"}, True]


def mutate_config(text: str, rng: random.Random) -> tuple[str, str]:
    r = rng.random()
    if r < 0.15:  # corrupt JSON text
        b = bytearray(text.encode())
        if rng.random() < 0.5:
            del b[rng.randrange(len(b)):]
        else:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return b.decode("utf-8", "replace"), "config-bytes"
    cfg = json.loads(text)
    key = rng.choice(sorted(cfg))
    if r < 0.3:
        del cfg[key]
        return json.dumps(cfg), f"config-del {key}"
    if isinstance(cfg[key], dict) and cfg[key] and rng.random() < 0.5:
        sub = rng.choice(sorted(cfg[key]))
        cfg[key][sub] = rng.choice(CONFIG_VALUES)
        return json.dumps(cfg), f"config {key}.{sub}={cfg[key][sub]!r}"
    if isinstance(cfg[key], list) and cfg[key] and rng.random() < 0.5:
        i = rng.randrange(len(cfg[key]))
        cfg[key][i] = rng.choice(CONFIG_VALUES)
        return json.dumps(cfg), f"config {key}[{i}]={cfg[key][i]!r}"
    cfg[key] = rng.choice(CONFIG_VALUES)
    return json.dumps(cfg), f"config {key}={cfg[key]!r}"


def mutate_safetensors(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8: 8 + n])
    r = rng.random()
    if r < 0.15:
        return rng.choice(BOUNDARY).to_bytes(8, "little") + data[8:], "st-header-length"
    if r < 0.3:
        out = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(0, 8 + n if rng.random() < 0.7 else len(out))
            out[pos] ^= 1 << rng.randrange(8)
        return bytes(out), "st-flip"
    if r < 0.42:
        return data[: rng.randrange(len(data))], "st-truncate"
    name = rng.choice(sorted(k for k in header if k != "__metadata__"))
    info = header[name]
    field = rng.choice(["dtype", "shape", "data_offsets", "drop", "rename"])
    if field == "dtype":
        info["dtype"] = rng.choice(["F32", "F16", "BF16", "I64", "I8", "U8", "F64", "BOOL", "F8_E4M3", "Q", "", 3])
    elif field == "shape":
        s = list(info["shape"])
        choice = rng.random()
        if choice < 0.3 or not s:
            s = s + [rng.choice([1, 2, 0])]
        elif choice < 0.5:
            s = s[:-1]
        else:
            s[rng.randrange(len(s))] = rng.choice([0, -1, 1, 2 ** 31, 2 ** 62, s[0] * 2])
        info["shape"] = s
    elif field == "data_offsets":
        b, e = info["data_offsets"]
        info["data_offsets"] = rng.choice([[e, b], [b, e + 2], [b + 1, e + 1], [0, e - b], [b, 2 ** 63], [-1, e], [b]])
    elif field == "drop":
        del header[name]
    else:
        header[name + ".x" if rng.random() < 0.5 else name.replace("weight", "bias")] = header.pop(name)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + data[8 + n:], f"st-{field} {name}"


def mutate_bin(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if rng.random() < 0.3:
        return data[: rng.randrange(len(data))], "bin-truncate"
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out), "bin-flip"


# --- one case ------------------------------------------------------------------------------------

def names_file(message: str, path: Path) -> bool:
    return str(path) in message or path.name in message


def child(kind: str, work: Path, victim: Path, seeds: Seeds, result: Path, with_head: bool) -> None:
    """Runs in the forked process: load (convert) and generate; writes the outcome to `result`."""
    import pyeagle
    from pyeagle.convert import ConversionError, convert

    typed = (pyeagle.ModelFileError, FileNotFoundError, ConversionError)
    out = {"outcome": "ok"}
    stage = "load"
    try:
        if kind == "checkpoint":
            head = convert(work, seeds.ck_target, work.parent / "converted.gguf")
            target = seeds.ck_target
        elif kind == "head":
            head, target = victim, seeds.target
        else:
            head, target = (seeds.head if with_head else None), victim
        eng = pyeagle.Engine(str(target), draft=str(head) if head else None, n_ctx=256, n_threads=1)
        stage = "generate"
        res = eng.generate(PROMPT, max_tokens=4, n_tree=4, n_depth=2, n_top_k=2, adaptive=False)
        out["tokens"] = len(res.tokens)
        if not res.tokens:
            out["outcome"] = "no-tokens"
    except typed as e:
        msg = str(e)
        # a checkpoint's refusal may name its directory or the one file of it that is wrong
        ok = stage == "load" and any(names_file(msg, p) for p in (work, victim))
        out = {"outcome": "refused" if ok else ("untyped" if stage == "load" else "no-tokens"),
               "error": f"{type(e).__name__}: {msg[:400]}", "stage": stage}
    except BaseException as e:  # noqa: BLE001 - everything else is a finding
        out = {"outcome": "untyped" if stage == "load" else "no-tokens", "error": f"{type(e).__name__}: {str(e)[:400]}",
               "stage": stage, "trace": traceback.format_exc()[-1500:]}
    result.write_text(json.dumps(out))


@dataclass
class Case:
    kind: str
    index: int
    seed: int
    seeds: str = "tiny"  # tiny | real

    @property
    def id(self) -> str:
        return f"{self.seeds}-{self.kind}-{self.seed}-{self.index}"


class Runner:
    """Prepares each case's files in its slot directory, forks a child for it, collects the outcome."""

    def __init__(self, seeds: Seeds, root: Path, findings: Path, timeout: float, mem_gib: float):
        self.seeds, self.root, self.findings = seeds, root, findings
        self.timeout, self.mem = timeout, int(mem_gib * (1 << 30))
        self.cache: dict[Path, tuple[bytes, list[Site], int]] = {}

    def _gguf(self, path: Path):
        if path not in self.cache:
            data = path.read_bytes()
            sites, data_offset = gguf_sites(data)
            self.cache[path] = (data, sites, data_offset)
        return self.cache[path]

    def prepare(self, case: Case, slot: Path) -> tuple[Path, Path, str]:
        """Writes the mutated file(s) into slot/; returns (work path, victim file, description)."""
        rng = random.Random(case.id)
        if slot.exists():
            shutil.rmtree(slot)
        slot.mkdir(parents=True)
        if case.kind in ("head", "target"):
            src = self.seeds.head if case.kind == "head" else self.seeds.target
            data, sites, data_offset = self._gguf(src)
            out, desc = mutate_gguf(data, rng, sites, data_offset)
            victim = slot / src.name
            victim.write_bytes(out)
            return victim, victim, desc
        ck = rng.choice(self.seeds.checkpoints)
        work = slot / ck.name
        shutil.copytree(ck, work)
        files = sorted(p for p in work.iterdir() if p.is_file())
        victim = rng.choice(files)
        if victim.name == "config.json":
            text, desc = mutate_config(victim.read_text(), rng)
            victim.write_text(text)
        elif victim.suffix == ".safetensors":
            data, desc = mutate_safetensors(victim.read_bytes(), rng)
            victim.write_bytes(data)
        else:
            data, desc = mutate_bin(victim.read_bytes(), rng)
            victim.write_bytes(data)
        return work, victim, f"{ck.name}/{victim.name}: {desc}"

    def start(self, case: Case, slot: Path):
        work, victim, desc = self.prepare(case, slot)
        result = slot / "result.json"
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                import resource

                resource.setrlimit(resource.RLIMIT_AS, (self.mem, self.mem))
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                # a target case loads the intact head with it half the time (the pairing checks)
                with_head = random.Random(case.id + "/head").random() < 0.5
                child(case.kind, work, victim, self.seeds, result, with_head)
            except BaseException:  # noqa: BLE001
                code = 3
            finally:
                os._exit(code)
        return {"case": case, "pid": pid, "t0": time.monotonic(), "result": result, "desc": desc, "victim": victim}

    def finish(self, job: dict, status: int | None) -> dict:
        case = job["case"]
        rec = {"id": case.id, "kind": case.kind, "mutation": job["desc"], "seconds": round(time.monotonic() - job["t0"], 3)}
        if status is None:
            rec["outcome"] = "hang"
        elif os.WIFSIGNALED(status):
            rec.update(outcome="crash", signal=os.WTERMSIG(status))
        elif job["result"].exists():
            rec.update(json.loads(job["result"].read_text()))
        else:
            rec.update(outcome="crash", exit=os.WEXITSTATUS(status))
        if rec["outcome"] in BAD:  # keep the file that did it
            keep = self.findings / case.id
            keep.mkdir(parents=True, exist_ok=True)
            src = job["victim"]
            shutil.copy(src, keep / src.name)
            rec["kept"] = str(keep / src.name)
        return rec


def run(cases: list[Case], runner: Runner, out: Path, jobs: int, progress: bool = True) -> list[dict]:
    done = set()
    records = []
    if out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add(r["id"])
                records.append(r)
    todo = [c for c in cases if c.id not in done]
    slots = [runner.root / f"slot{i}" for i in range(jobs)]
    free = list(range(jobs))
    running: dict[int, tuple[dict, int]] = {}
    n_done, t_start = 0, time.monotonic()
    with open(out, "a") as f:
        try:
            while todo or running:
                while todo and free:
                    i = free.pop()
                    job = runner.start(todo.pop(0), slots[i])
                    running[job["pid"]] = (job, i)
                time.sleep(0.002)
                for pid, (job, i) in list(running.items()):
                    got, status = os.waitpid(pid, os.WNOHANG)
                    if got == 0:
                        if time.monotonic() - job["t0"] < runner.timeout:
                            continue
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        status = None
                    rec = runner.finish(job, status)
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    records.append(rec)
                    del running[pid]
                    free.append(i)
                    n_done += 1
                    if progress and (n_done % 50 == 0 or rec["outcome"] in BAD):
                        el = time.monotonic() - t_start
                        print(f"fuzz: {n_done}/{n_done + len(todo) + len(running)} cases, {el:.0f} s"
                              + (f"; {rec['outcome']}: {rec['id']} {rec['mutation']} {rec.get('error', '')[:200]}"
                                 if rec["outcome"] in BAD else ""), file=sys.stderr, flush=True)
        finally:
            for pid in running:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    return records


def summary(records: list[dict]) -> str:
    rows = ["| kind | cases | " + " | ".join(OUTCOMES) + " |", "|---|---|" + "---|" * len(OUTCOMES)]
    for kind in KINDS + ("all",):
        rs = [r for r in records if kind in ("all", r["kind"])]
        if not rs:
            continue
        counts = [sum(r["outcome"] == o for r in rs) for o in OUTCOMES]
        rows.append(f"| {kind} | {len(rs)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="120 head, 120 target, 60 checkpoint cases on tiny files")
    ap.add_argument("--long", action="store_true", help="10,000 head, 2,000 target, 1,000 checkpoint cases")
    ap.add_argument("--kinds", default=",".join(KINDS), help="which kinds (default: all)")
    ap.add_argument("--n", type=int, help="cases per kind (overrides --quick/--long)")
    ap.add_argument("--real", action="store_true", help="mutate the shipped head and the real default target "
                                                        "(checkpoints stay tiny)")
    ap.add_argument("--seed", type=int, default=0, help="case seed (another seed: other mutations)")
    ap.add_argument("--jobs", type=int, default=2, help="cases at once (default 2)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default 60)")
    ap.add_argument("--mem-gib", type=float, default=8.0, help="address-space limit per case (default 8 GiB)")
    ap.add_argument("--out", default="fuzz-results.jsonl", help="results, one JSON line per case; resumes")
    ap.add_argument("--work", help="directory for seeds and cases (default: a temporary one)")
    args = ap.parse_args(argv)

    per_kind = {"head": 120, "target": 120, "checkpoint": 60}
    if args.long:
        per_kind = {"head": 10000, "target": 2000, "checkpoint": 1000}
    kinds = [k for k in args.kinds.split(",") if k]
    if set(kinds) - set(KINDS):
        ap.error(f"--kinds: choose from {', '.join(KINDS)}")
    n_of = {k: args.n or per_kind[k] for k in kinds}
    cases = [Case(k, i, args.seed, "real" if args.real else "tiny") for k in kinds for i in range(n_of[k])]
    cases.sort(key=lambda c: (c.index / n_of[c.kind], c.kind))  # kinds interleaved: a stopped run has some of each

    import pyeagle  # noqa: F401 - imported once here; each case's process is forked from this one
    if "checkpoint" in kinds:
        try:
            import torch  # noqa: F401 - .bin checkpoints: imported before forking, not in every case
        except ImportError:
            pass
    tmp = None
    root = Path(args.work) if args.work else Path(tmp := tempfile.mkdtemp(prefix="pyeagle-fuzz-", dir="/dev/shm"
                                                                             if os.path.isdir("/dev/shm") else None))
    try:
        seeds = real_seeds(root / "seeds") if args.real else tiny_seeds(root / "seeds")
        out = Path(args.out)
        runner = Runner(seeds, root, out.with_name(out.stem + "-findings"), args.timeout, args.mem_gib)
        t0 = time.monotonic()
        records = run(cases, runner, out, args.jobs)
        wanted = {c.id for c in cases}
        records = [r for r in records if r["id"] in wanted]
        print(f"# pyeagle fuzz: {len(records)} cases, seed {args.seed}, {'real' if args.real else 'tiny'} seeds, "
              f"{time.monotonic() - t0:.0f} s\n")
        print(summary(records))
        bad = [r for r in records if r["outcome"] in BAD]
        for r in bad[:20]:
            print(f"\n- {r['outcome']}: {r['id']} ({r['mutation']}): {r.get('error', '')}")
        return 1 if bad else 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
