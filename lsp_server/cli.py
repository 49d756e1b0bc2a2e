"""`hone`: complete, corpus, tokenizer, train, eval, adapt, serve, bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.config import VOCAB_SIZE
from model.types import DEVICES


def _complete(a) -> int:
    from lsp_server.completion import complete_file
    from model.engine import Engine

    path = Path(a.file)
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    engine = Engine.load(a.model, a.device, trust_remote_code=a.trust_remote_code)
    completion = complete_file(engine, text, a.line, a.col)
    print(completion)
    if not completion:
        print("(no completion: the model proposes nothing to insert here)", file=sys.stderr)
    return 0


def _corpus(a) -> int:
    from model import DEFAULT_MODEL_DIR
    from model.training.corpus import build_corpus, count_tokens, default_roots

    roots = [Path(r) for r in a.roots] or default_roots()
    rec = build_corpus(roots, Path(a.out))
    tok = Path(a.tokenizer) if a.tokenizer else DEFAULT_MODEL_DIR / "tokenizer.json"
    if tok.is_file():  # `hone tokenizer` recounts with the BPE it trains
        count_tokens(Path(a.out), tok)
        rec = json.loads((Path(a.out) / "corpus.json").read_text())
    print(json.dumps(rec, indent=2))
    return 0


def _tokenizer(a) -> int:
    import random

    from model.training.corpus import count_tokens, load_texts
    from model.tokenizer import train_tokenizer

    texts = load_texts(Path(a.corpus) / "train.jsonl")
    random.Random(0).shuffle(texts)
    sub, n = [], 0
    for t in texts:  # a 40 MB sample gives the same merges as the whole corpus, in seconds
        sub.append(t)
        n += len(t)
        if n > a.max_chars:
            break
    tok = train_tokenizer(sub, a.vocab_size)
    tok.save(a.out)
    counts = count_tokens(Path(a.corpus), Path(a.out))
    chars = sum(map(len, load_texts(Path(a.corpus) / "heldout.jsonl")))
    print(f"vocab {tok.vocab_size}; tokens: {counts}; held-out {chars / max(1, counts['heldout']):.2f} chars/token")
    return 0


def _train(a) -> int:
    from model.training.trainer import TRAIN_PRESETS, TrainConfig, Trainer

    over = {k: v for k, v in dict(route=a.route, hours=a.hours, tokens=a.tokens, threads=a.threads, ar_fraction=a.ar_fraction,
                                  precision=a.precision, batch=a.batch, eval_every_s=a.eval_every, lr=a.lr,
                                  warmup_steps=a.warmup_steps, optimizer=a.optimizer, mask_schedule=a.mask_schedule,
                                  complementary=a.complementary or None, schedule=a.schedule,
                                  decay_share=a.decay_share, context_tokens=a.context_tokens,
                                  context_share=a.context_share, draft_share=a.draft_share,
                                  draft_weight=a.draft_weight).items() if v is not None}
    if a.init_from and a.preset != "finetune" and over.get("route") not in ("diffusion", "spm"):
        print("--init-from: using the finetune preset's route (diffusion: the model's own layout)", file=sys.stderr)
        over["route"] = "diffusion"
    cfg = TrainConfig(**{**TRAIN_PRESETS[a.preset], **over})
    tr = Trainer(cfg, Path(a.corpus), Path(a.tokenizer), Path(a.run_dir), Path(a.init_from) if a.init_from else None)
    if a.cooldown:
        tr.cool_down(a.cooldown)
    tr.run()
    return 0


def _eval(a) -> int:
    from model.reports.evaluate import main as eval_main

    eval_main(a.model, Path(a.corpus), a.n_line, a.n_multi, a.write_card, a.device, a.threads, a.quick, a.compile)
    return 0


def _eval_repo(a) -> int:
    from model.reports.repo_eval import ARMS, default_repos, main as repo_main

    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    if bad := [x for x in arms if x not in ARMS]:
        raise SystemExit(f"--arms: unknown {', '.join(bad)} (choose from {', '.join(ARMS)})")
    repos = Path(a.repos) if a.repos else default_repos()
    if a.adapt:
        from model.reports.repo_eval import adapt_main

        adapt_main(a.model, repos, a.n, a.seed, a.adapt, a.threads, a.device, a.adapt_steps, a.projects)
        return 0
    repo_main(a.model, repos, a.n, a.seed, arms, a.threads, a.write_card, a.device)
    return 0


def _adapt(a) -> int:
    import msgspec
    from tqdm import tqdm

    from model import DEFAULT_MODEL_DIR
    from model.adapted import adapted_dir
    from model.training.adapt import AdaptConfig, AdaptError, adapt, cpu_clock
    from model.workspace import WorkspaceIndex

    root = Path(a.dir).resolve()
    if not root.is_dir():
        raise SystemExit(f"{root}: not a folder")
    index = WorkspaceIndex()  # the server's own walk: .gitignore rules, no virtualenvs, the same size limits
    index.add_root(str(root))
    index.scan()
    files = index.texts(str(root))
    print(f"{root}: {len(files)} Python files, {sum(map(len, files.values())) / 1e6:.2f}M characters", file=sys.stderr)
    cfg = AdaptConfig(minutes=a.minutes, threads=a.threads or AdaptConfig().threads, precision=a.precision)
    if a.lr:
        cfg.lr = a.lr
    bar = tqdm(total=round(a.minutes * 60), unit="s", desc="adapt")

    def progress(rec: dict) -> None:
        if "elapsed" in rec:
            bar.update(round(rec["elapsed"]) - bar.n)
            bar.set_postfix(step=rec["step"], loss=f"{rec['loss']:.3f}")
        else:
            tqdm.write(f"held-out {rec['event']}: " + ", ".join(
                f"{k.removeprefix('heldout_')} {'diverged' if v is None else f'{v:.3f}'}" for k, v in rec.items()
                if k.startswith("heldout_")))

    base = Path(a.model) if a.model else DEFAULT_MODEL_DIR
    out = Path(a.out).resolve() if a.out else None
    try:
        info = adapt(files, base, cfg, root=str(root), out=out, progress=progress,
                     **({"clock": cpu_clock(cfg.threads)} if a.cpu_time else {}))
    except AdaptError as e:
        raise SystemExit(f"hone adapt: {e}")
    finally:
        bar.close()
    where = out if out is not None else adapted_dir(root) / "model"
    verdict = (f"kept: {where}" + ("" if out else " (hone-lsp uses it for this workspace)") if info.kept
               else "not kept: the held-out loss did not fall (the model in use stays)")
    print(f"{info.steps} steps ({info.passes:.1f} passes over its text), {info.tokens / 1e6:.2f}M tokens, "
          f"{info.minutes:.1f} min ({info.precision}); {verdict}",
          file=sys.stderr)
    print(msgspec.json.encode(info).decode())
    return 0


def _routes(a) -> int:
    from model.reports.recipes import route_report

    rep = route_report([Path(r) for r in a.runs], Path(a.corpus), Path(a.out), Path(a.card) if a.card else None,
                       a.n_line, a.n_multi, a.threads)
    print(json.dumps(rep))
    return 0


def _ship(a) -> int:
    from model.reports.card import ship

    print(ship(Path(a.run_model), Path(a.corpus)))
    return 0


def _drafts(a) -> int:
    from tqdm import tqdm

    from model import DEFAULT_MODEL_DIR
    from model.drafts import build_from_corpus

    bar = tqdm(desc="drafts", unit="file")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    table, path = build_from_corpus(Path(a.corpus), Path(a.model) if a.model else DEFAULT_MODEL_DIR, a.min_count, progress)
    bar.close()
    print(f"{path}: {len(table):,} token pairs, {path.stat().st_size / 2**20:.1f} MiB")
    return 0


def read_token_file(path: str | None) -> str | None:
    """The bearer token in `path` (surrounding whitespace dropped); None without a path."""
    if not path:
        return None
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise SystemExit(f"{path}: the token file is empty")
    return token


SERVE_MISSING = "hone serve needs Ray Serve: pip install 'hone[serve]' (or pip install 'ray[serve]')"


def _serve(a) -> int:
    try:
        from model.serving.app import is_loopback, serve_forever
    except ImportError as e:
        raise SystemExit(f"{SERVE_MISSING} ({e})") from None
    token = read_token_file(a.token_file)
    if token is None and not is_loopback(a.host):
        raise SystemExit(f"--host {a.host} reaches other machines: give a --token-file (e.g. openssl rand -hex 32 > token)")
    serve_forever(a.model, device=a.device, host=a.host, port=a.port, replicas=a.replicas, token=token,
                  threads=a.threads, max_replicas=a.max_replicas, address=a.address, compile=a.compile)
    return 0


def _bench(a) -> int:
    if a.what == "serve":
        try:
            from model.serving.bench import run as run_serve_bench
        except ImportError as e:
            raise SystemExit(f"{SERVE_MISSING} ({e})") from None
        run_serve_bench(a)
        return 0
    if a.what == "engine":
        from model.reports.bench import run

        run(a.model, a.n, a.device, a.ar_model, a.threads, compile=a.compile)
    elif a.what == "steps":
        from model.reports.steps import run as run_steps

        run_steps(a.model, a.threads)
    elif a.what == "speed":
        from model.reports.bench import run_speed

        run_speed(a.model, a.n, a.device, a.ar_model, a.threads, compile=a.compile, corpus=a.corpus)
    elif a.what == "thirdparty":
        from model.reports.thirdparty import run as run_thirdparty

        run_thirdparty(a.family, a.size, a.device, a.cases, a.refresh, a.seed, a.threads)
    elif a.what == "soak":
        from lsp_server.soak import run as run_soak

        run_soak(a)
    else:
        from lsp_server.bench import run

        run(a)
    return 0


def _args_complete(sub) -> None:
    c = sub.add_parser("complete", help="print a completion for FILE at LINE COL (0-based, like LSP)")
    c.add_argument("file")
    c.add_argument("line", type=int)
    c.add_argument("col", type=int)
    c.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    c.add_argument("--device", default="auto")
    c.add_argument("--trust-remote-code", action="store_true")
    c.set_defaults(fn=_complete)


def _args_corpus(sub) -> None:
    c = sub.add_parser("corpus", help="gather and deduplicate Python sources")
    c.add_argument("roots", nargs="*", help="folders (default: this interpreter's stdlib and site-packages)")
    c.add_argument("--out", default="data/corpus")
    c.add_argument("--tokenizer", default=None, help="count tokens with this tokenizer.json (default: the shipped one)")
    c.set_defaults(fn=_corpus)


def _args_tokenizer(sub) -> None:
    c = sub.add_parser("tokenizer", help="train the byte-level BPE on a corpus")
    c.add_argument("--corpus", default="data/corpus")
    c.add_argument("--out", default="data/tokenizer.json")
    c.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    c.add_argument("--max-chars", type=int, default=40_000_000)
    c.set_defaults(fn=_tokenizer)


def _args_train(sub) -> None:
    c = sub.add_parser("train", help="train (or resume) a model; Ctrl-C checkpoints and stops")
    c.add_argument("--preset", choices=("cpu", "finetune", "gpu", "smoke"), default="cpu")
    c.add_argument("--corpus", default="data/corpus")
    c.add_argument("--tokenizer", default="data/tokenizer.json")
    c.add_argument("--run-dir", default="runs/main")
    c.add_argument("--route", choices=["spm", "ar-diffusion", "diffusion"], default=None,
                   help="spm (default): causal suffix-prefix context with next-token loss + a bidirectional canvas")
    c.add_argument("--optimizer", choices=["adamw", "muon"], default=None)
    c.add_argument("--mask-schedule", choices=["uniform", "clipped"], default=None)
    c.add_argument("--complementary", action="store_true", help="pairs of rows with complementary canvas masks")
    c.add_argument("--draft-share", type=float, default=None,
                   help="spm: this share of the rows trains the canvas as a drafter (fully masked after the stream, "
                        "distilled from the stream's next-token predictions)")
    c.add_argument("--draft-weight", type=float, default=None, help="the drafting distillation term's weight (default 1)")
    c.add_argument("--lr", type=float, default=None)
    c.add_argument("--schedule", choices=["cosine", "wsd"], default=None,
                   help="wsd: warmup, constant, linear decay over the last --decay-share (for runs spanning sessions)")
    c.add_argument("--decay-share", type=float, default=None)
    c.add_argument("--cooldown", type=float, default=None,
                   help="hours: end the schedule that far from where the run stands, decaying the learning rate "
                        "(run it on a copy of the run folder to ship cooled-down weights)")
    c.add_argument("--ar-fraction", type=float, default=None)
    c.add_argument("--hours", type=float, default=None, help="wall-clock budget the schedule follows")
    c.add_argument("--tokens", type=int, default=None, help="token budget instead of hours (equal-compute comparisons)")
    c.add_argument("--batch", type=int, default=None, help="sequences per step (per process under torchrun)")
    c.add_argument("--warmup-steps", type=int, default=None, help="linear warmup (short budgets want fewer)")
    c.add_argument("--eval-every", type=float, default=None, help="seconds of training between held-out evals + checkpoints")
    c.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                   help="auto: bf16 autocast only where the hardware has native bf16")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--init-from", default=None, help="fine-tune from this model folder (e.g. on your own code)")
    c.add_argument("--context-tokens", type=int, default=None,
                   help="cross-file context per example (tokens; 0: none): the package's other files, retrieved as "
                        "the server retrieves a workspace's")
    c.add_argument("--context-share", type=float, default=None, help="share of examples given that context")
    c.set_defaults(fn=_train)


def _args_eval(sub) -> None:
    c = sub.add_parser("eval", help="held-out loss and infill quality per commit rule")
    c.add_argument("--model", default=None)
    c.add_argument("--corpus", default="data/corpus")
    c.add_argument("--n-line", type=int, default=100)
    c.add_argument("--n-multi", type=int, default=40)
    c.add_argument("--device", default="cpu")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--write-card", action="store_true", help="write the table into the model's MODEL_CARD.md")
    c.add_argument("--quick", action="store_true", help="only the default decoding (not every commit rule and window)")
    c.add_argument("--compile", action="store_true", help="compile the model's steps first (the ms columns then show them)")
    c.set_defaults(fn=_eval)


def _args_eval_repo(sub) -> None:
    c = sub.add_parser("eval-repo", help="repository-level held-out eval: lines using a name of another file of the "
                       "project, file only vs + cross-file context vs a copy baseline")
    c.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    c.add_argument("--repos", default=None, help="folder of held-out projects, one per subfolder (default: "
                   "$HONE_RUNS/repos or ~/.cache/hone/repos; fetch them with scripts/repo_projects.sh)")
    c.add_argument("--n", type=int, default=300, help="cases, spread over the projects and their files")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--arms", default="file,hint,repo,context,copy", help="comma-separated: file (the model alone), hint "
                   "(+ copy hints from the file), repo (+ copy hints from the project, as the server gives every line), "
                   "context (+ cross-file context the model reads), copy (model-free)")
    c.add_argument("--device", default="cpu")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--write-card", action="store_true", help="write the table into the model's MODEL_CARD.md")
    c.add_argument("--adapt", type=float, default=0.0, metavar="MINUTES", help="instead: per project, the repo arm on "
                   "its cases before and after `hone adapt` for MINUTES on the project with the answers blanked "
                   "(--n cases per project)")
    c.add_argument("--adapt-steps", type=int, default=0, help="with --adapt: a step budget instead of the minutes (as "
                   "many steps as the minutes make on an idle machine, for runs on a busy one)")
    c.add_argument("--projects", default="", help="with --adapt: comma-separated project folder names (default: all)")
    c.set_defaults(fn=_eval_repo)


def _args_adapt(sub) -> None:
    c = sub.add_parser("adapt", help="fine-tune the model on one repository's Python files (kept only if its held-out "
                       "lines improve); hone-lsp then uses it for that workspace")
    c.add_argument("dir", help="the repository (workspace root)")
    c.add_argument("--minutes", type=float, default=5.0, help="training budget (default 5)")
    c.add_argument("--out", default=None, help="write a plain model folder here (for --model / the model setting) "
                   "instead of the per-workspace model under ~/.cache/hone/adapted")
    c.add_argument("--model", default=None, help="the model to adapt (default: the shipped model)")
    c.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4)")
    c.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast only where the CPU computes bf16 natively (more steps in the minutes)")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--cpu-time", action="store_true", help="count the minutes in CPU time per thread (a run that is "
                   "paused from outside, as the server's idle adaptation does)")
    c.set_defaults(fn=_adapt)


def _args_routes(sub) -> None:
    c = sub.add_parser("routes", help="compare runs of several recipes (same token budget): curves, eval, card section")
    c.add_argument("runs", nargs="+", help="run folders, e.g. runs/recipe-spm runs/recipe-ar-then-diffusion")
    c.add_argument("--corpus", default="data/corpus")
    c.add_argument("--out", default="model/default/recipes.png")
    c.add_argument("--card", default=None, help="write the comparison into this MODEL_CARD.md")
    c.add_argument("--n-line", type=int, default=60)
    c.add_argument("--n-multi", type=int, default=20)
    c.add_argument("--threads", type=int, default=None)
    c.set_defaults(fn=_routes)


def _args_ship(sub) -> None:
    c = sub.add_parser("ship", help="copy a run's model folder into the package as the default model")
    c.add_argument("run_model", help="e.g. runs/main/model")
    c.add_argument("--corpus", default="data/corpus")
    c.set_defaults(fn=_ship)


def _args_drafts(sub) -> None:
    c = sub.add_parser("drafts", help="build a model's n-gram draft table (drafts.npz) from a corpus's training split")
    c.add_argument("--model", default=None, help="model folder to write it into (default: the shipped model)")
    c.add_argument("--corpus", default="data/corpus")
    c.add_argument("--min-count", type=int, default=2, help="keep token pairs seen at least this often")
    c.set_defaults(fn=_drafts)


def _args_serve(sub) -> None:
    c = sub.add_parser("serve", help="the team service: the engine in Ray Serve replicas behind an HTTP API")
    c.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    c.add_argument("--device", default="auto", choices=DEVICES,
                   help="auto: one GPU per replica when the Ray cluster has GPUs, else CPUs")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback; others need --token-file)")
    c.add_argument("--port", type=int, default=8000)
    c.add_argument("--replicas", type=int, default=None, help="engine replicas (default: one per GPU, else 1)")
    c.add_argument("--max-replicas", type=int, default=None, help="autoscale between --replicas and this many")
    c.add_argument("--threads", type=int, default=None, help="CPU threads (and Ray CPUs) per CPU replica (default 1)")
    c.add_argument("--token-file", default=None, help="file holding the bearer token clients must send")
    c.add_argument("--address", default=None,
                   help="join this Ray cluster (e.g. auto after `ray start --head`) instead of starting a local one")
    c.add_argument("--compile", action="store_true", help="each CPU replica runs its model's steps compiled ahead of "
                   "time (built or loaded from the cache in the background after loading, eager meanwhile)")
    c.set_defaults(fn=_serve)


def _args_bench(sub) -> None:
    c = sub.add_parser("bench", help="benchmarks: engine, steps (eager vs compiled ways), speed (diffusion vs its AR "
                       "twin), lsp, soak (a day of typing: memory and lost requests), serve or thirdparty (random "
                       "third-party families: recompute vs dual cache)")
    c.add_argument("what", choices=["engine", "steps", "speed", "lsp", "soak", "serve", "thirdparty"])
    c.add_argument("--model", default=None)
    c.add_argument("--device", default="cpu")
    c.add_argument("--n", type=int, default=30)
    c.add_argument("--threads", type=int, default=None, help="CPU threads (default: all free cores)")
    from lsp_server.bench import add_args as add_lsp_bench_args

    c.add_argument("--ar-model", default=None, help="engine: also time this autoregressive network (e.g. runs/main/ar_model)")
    c.add_argument("--corpus", default=None, help="speed, lsp: cases from this corpus's held-out split (default: the "
                   "standard library, which the shipped model and its n-gram drafts were trained on)")
    add_lsp_bench_args(c)
    from lsp_server.soak import add_args as add_soak_args

    add_soak_args(c)
    from model.serving.bench import add_args as add_serve_bench_args

    add_serve_bench_args(c)
    # thirdparty (model.reports.thirdparty checks the values; its own parser has the same flags: a test compares them)
    c.add_argument("--family", default="both", help="thirdparty: qwen2, llada or both")
    c.add_argument("--size", default="small", help="thirdparty: tiny (tests), small (~100M, CPUs) or 7b")
    c.add_argument("--cases", type=int, default=None, help="thirdparty: cases per kind (default: by size)")
    c.add_argument("--refresh", default="block", help="thirdparty: the cached path's refresh, block (measured by "
                   "default) or step (exact)")
    c.set_defaults(fn=_bench)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hone", description="Hone: diffusion code completion")
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_args_complete, _args_corpus, _args_tokenizer, _args_train, _args_eval, _args_eval_repo, _args_adapt, _args_routes, _args_ship, _args_drafts, _args_serve, _args_bench):
        add(sub)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
