"""Block-local vs masked windowed attention, side by side in one process (issue 21, item 2).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_attention          # writes benchmarks/results/attention-cpu.md
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_attention --quick  # smaller batch and input, a smoke run

Each model runs with ``attention_impl="masked"`` (the reference: one mask over a call's keys; a windowed
input runs in chunks of 1,024 tokens) and ``"blocked"`` (queries in blocks of Q against their own keys and
the W-1 before them), flipped on the same live model, so both use the same weights; the blocked path also
with longer blocks (Q = 2W, 4W) to choose the block size. What is measured, interleaved round by round, each
figure the minimum over rounds:

- (a) the qa1 recipe's training step: the models of configs/memory-qa1-lm2.yaml and memory-qa1-vanilla.yaml
  (width 64, 2 blocks, 4 heads, window 64; LM2: segment 32, 16 slots) on a batch the recipe's generator draws
  (batch 32, word-level tokens) in its "far" stage (filler 0 / 256 / 1,024 tokens) and its "near" stage
  (filler up to 256): forward + backward through the trainer's ``run_pieces`` (loss on the answers only),
  gradient clipping and an AdamW step;
- (b) scoring a 65,536-token input: one forward (``LM2Model`` runs it in chunks through the cache) and the
  summed next-token loss, no gradients;
- (c) self-attention's share of block forward time: forward hooks around every block and its ``self_attn``,
  over one forward of (a)'s "far" batch (with gradients, as in training) and one of (b)'s input; the
  fastest of the rounds;
- (d) where the blocked path starts to pay: one self-attention layer of the recipe's shape, forward +
  backward, batch 32, calls of T tokens without a cache, each path forced (the model itself runs blocked
  only from ``WindowBlocks.MIN_SAVING`` times the scores per query, L / (Q + W - 1)).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench_model import interleaved_min, machine, progress
from lm2 import LM2ForCausalLM
from lm2.data.batch import Batch
from lm2.data.generated import GeneratedQA
from lm2.data.make import TokenizerSpec, make_tokenizer
from lm2.layers import SelfAttention, WindowBlocks, rope_cos_sin, window_mask
from lm2.train.config import Config, load_config
from lm2.train.forward import run_pieces
from lm2.train.models import build_config, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"lm2": "memory-qa1-lm2.yaml", "vanilla": "memory-qa1-vanilla.yaml"}
STAGES = {"far": 1, "near": 0}  # the recipe's curriculum stages: far = filler 0 / 256 / 1024 tokens


def variants(window: int) -> dict[str, tuple[str, int | None]]:
    """name -> (attention_impl, block size); None = the default block (the window)."""
    return {
        "masked": ("masked", None),
        f"blocked Q={window}": ("blocked", None),
        f"blocked Q={2 * window}": ("blocked", 2 * window),
        f"blocked Q={4 * window}": ("blocked", 4 * window),
    }


def use(model: LM2ForCausalLM, impl: str, block: int | None) -> None:
    model.config.attention_impl = impl
    model.model.attention_block = block


def recipe(arm: str, tokenizer: Path) -> Config:
    return load_config(ROOT / "configs" / ARMS[arm], [f"data.tokenizer={tokenizer}"])


def recipe_batches(cfg: Config, tokenizer, stage: int, batch_size: int, steps: int = 1) -> list[Batch]:
    """Rows 0..batch_size-1 of the recipe's first ``steps`` steps in ``stage``: what the trainer would draw."""
    d, g = cfg.data, cfg.data.generate
    data = GeneratedQA(tokenizer, g.background, d.prompt_format, d.answer_eos, cfg.train.seed, g.background_sentences)
    rows = range(batch_size)
    return [data.batch(cfg.generate_config(stage), cfg.train.seed, stage, s, rows) for s in range(steps)]


def training_step(model: LM2ForCausalLM, batch: Batch, cfg: Config) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    n_targets = batch.num_targets

    def step() -> None:
        run_pieces(model, batch, None, 1.0 / n_targets, backward=torch.Tensor.backward)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def scoring(model: LM2ForCausalLM, ids: torch.Tensor) -> Callable[[], None]:
    def score() -> None:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=True).logits  # (1, T, V)
            F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")

    return score


def attention_share(model: LM2ForCausalLM, forward: Callable[[], None], rounds: int) -> tuple[float, float]:
    """(self-attention seconds, block seconds) of the fastest of ``rounds`` runs of ``forward``."""
    spent = {"block": 0.0, "attn": 0.0}
    started: dict[str, float] = {}

    def enter(key: str):
        def hook(*_) -> None:
            started[key] = time.perf_counter()

        return hook

    def leave(key: str):
        def hook(*_) -> None:
            spent[key] += time.perf_counter() - started[key]

        return hook

    handles = []
    for block in model.model.layers:
        for module, key in ((block, "block"), (block.self_attn, "attn")):
            handles += [module.register_forward_pre_hook(enter(key)), module.register_forward_hook(leave(key))]
    best = (float("inf"), float("inf"))
    try:
        forward()  # warm-up
        for _ in range(rounds):
            spent.update(block=0.0, attn=0.0)
            forward()
            if spent["block"] < best[1]:
                best = (spent["attn"], spent["block"])
    finally:
        for handle in handles:
            handle.remove()
    return best


def crossover(model: LM2ForCausalLM, batch_size: int, lengths: list[int], rounds: int) -> list[str]:
    """Table rows of (d): one attention layer like the model's, masked vs blocked (Q = W), by call length."""
    config = model.config
    window = config.attention_window
    torch.manual_seed(0)
    attn = SelfAttention(config.hidden_size, config.num_attention_heads, config.num_key_value_heads)
    rows = []
    for T in lengths:
        h = torch.randn(batch_size, T, config.hidden_size, requires_grad=True)  # (B, T, D)
        index = torch.arange(T)[None].expand(batch_size, T)  # no padding, no cache: index = column
        valid = torch.ones(batch_size, T, dtype=torch.bool)
        cos, sin = rope_cos_sin(index, config.head_dim, config.rope_theta, h.dtype)
        layouts = {
            "masked": window_mask(index, index, valid, window),
            "blocked": WindowBlocks.build(index, torch.zeros(batch_size, dtype=torch.long), valid, window, window),
        }

        def call(layout, h=h, cos=cos, sin=sin) -> Callable[[], None]:
            return lambda: attn(h, cos, sin, layout).sum().backward()

        t = interleaved_min({k: call(v) for k, v in layouts.items()}, rounds=rounds, reps=1, rewarm=True)
        saving = T / (2 * window - 1)
        rows.append(
            f"| {T:,} | {saving:.1f} | {t['masked'] * 1e3:.1f} | {t['blocked'] * 1e3:.1f} | "
            f"{t['masked'] / t['blocked']:.2f}x | {'blocked' if WindowBlocks.pays(T, window, None) else 'masked'} |"
        )
    return rows


def run(tokenizer_dir: Path, batch_size: int, score_length: int, rounds: int) -> str:
    tok = load_tokenizer(tokenizer_dir)
    cfgs = {arm: recipe(arm, tokenizer_dir) for arm in ARMS}
    models: dict[str, LM2ForCausalLM] = {}
    for arm, cfg in cfgs.items():
        torch.manual_seed(cfg.train.seed)
        models[arm] = LM2ForCausalLM(build_config(cfg.model, len(tok)))
    window = models["lm2"].config.attention_window
    kinds = variants(window)
    batches = {s: recipe_batches(cfgs["lm2"], tok, stage, batch_size)[0] for s, stage in STAGES.items()}
    lm2_config = models["lm2"].config
    lines = [
        f"Machine: {machine()}",
        "",
        f"Models: configs/memory-qa1-{{lm2,vanilla}}.yaml (width {lm2_config.hidden_size}, "
        f"{lm2_config.num_hidden_layers} blocks, {lm2_config.num_attention_heads} heads, window {window}; LM2: "
        f"segment {lm2_config.segment_length}, {lm2_config.memory_slots} slots), a {len(tok)}-token word-level "
        f"vocabulary. Q: queries per block of the blocked path (default: the window). Each figure is the "
        f"minimum over {rounds} interleaved rounds; ratios are masked / variant in the same run.",
        "",
        "### (a) The recipe's training step (forward + backward + clip + AdamW)",
        "",
        "| model | batch | attention | seconds / step | speed-up vs masked |",
        "|---|---|---|---|---|",
    ]
    for arm, model in models.items():
        model.train()
        for stage, batch in batches.items():
            shape = f"{stage}: {batch.input_ids.shape[0]} x {batch.input_ids.shape[1]}"
            progress(f"training step, {arm}, {shape}")
            step = training_step(model, batch, cfgs[arm])

            def timed(impl: str, block: int | None, step: Callable[[], None] = step, model=model) -> Callable[[], None]:
                def call() -> None:
                    use(model, impl, block)
                    step()

                return call

            t = interleaved_min({k: timed(*v) for k, v in kinds.items()}, rounds=rounds, reps=1, rewarm=True)
            for k in kinds:
                lines.append(f"| {arm} | {shape} | {k} | {t[k]:.3f} | {t['masked'] / t[k]:.2f}x |")

    lines += [
        "",
        f"### (b) Scoring a {score_length:,}-token input (one forward through the cache, summed loss)",
        "",
        "| model | attention | seconds | tokens / s | speed-up vs masked |",
        "|---|---|---|---|---|",
    ]
    ids = torch.randint(0, len(tok), (1, score_length), generator=torch.Generator().manual_seed(0))
    for arm, model in models.items():
        model.eval()
        progress(f"scoring {score_length} tokens, {arm}")
        score = scoring(model, ids)

        def timed_score(impl: str, block: int | None, score=score, model=model) -> Callable[[], None]:
            def call() -> None:
                use(model, impl, block)
                score()

            return call

        t = interleaved_min({k: timed_score(*v) for k, v in kinds.items()}, rounds=rounds, reps=1)
        for k in kinds:
            lines.append(
                f"| {arm} | {k} | {t[k]:.2f} | {score_length / t[k]:,.0f} | {t['masked'] / t[k]:.2f}x |"
            )

    lines += [
        "",
        "### (c) Self-attention's share of block forward time",
        "",
        "| model | input | attention | self-attention s | block forward s | share |",
        "|---|---|---|---|---|---|",
    ]
    far = batches["far"]
    for arm, model in models.items():
        progress(f"attention share, {arm}")
        model.train()

        def train_forward(model=model) -> None:
            # A backward that does nothing: the forward runs with gradients on (the graph is built, as in
            # training) and only the forward is timed.
            run_pieces(model, far, None, 1.0, backward=lambda loss: None)

        for k in ("masked", f"blocked Q={window}"):
            use(model, *kinds[k])
            attn, block = attention_share(model, train_forward, rounds)
            shape = f"{far.input_ids.shape[0]} x {far.input_ids.shape[1]} (training forward)"
            lines.append(f"| {arm} | {shape} | {k} | {attn:.3f} | {block:.3f} | {100 * attn / block:.0f}% |")
        model.eval()
        for k in ("masked", f"blocked Q={window}"):
            use(model, *kinds[k])
            attn, block = attention_share(model, scoring(model, ids), rounds)
            lines.append(
                f"| {arm} | 1 x {score_length:,} (scoring) | {k} | {attn:.2f} | {block:.2f} | {100 * attn / block:.0f}% |"
            )
    lines += [
        "",
        f"### (d) Where the blocked path pays: one self-attention layer, forward + backward, batch {batch_size}",
        "",
        "| tokens per call T | scores per query, masked / blocked | masked ms | blocked ms | speed-up | "
        "the model runs |",
        "|---|---|---|---|---|---|",
    ]
    progress("crossover")
    lines += crossover(models["vanilla"], batch_size, [96, 128, 160, 192, 256, 320, 448, 1024], rounds)
    lines += [
        "",
        "Batches: rows 0-31 of the recipe's first step in each curriculum stage, as its generator draws them "
        "(right-padded; the trainer passes no attention mask, so every column is a token to attend to). "
        "Self-attention time includes its projections, RoPE and the blocked path's layout gathers; the "
        "block's includes self-attention, the memory, the MLP and the norms. The share is measured with "
        "hooks in separate passes from the timings above.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batch 8, a 8,192-token input, 2 rounds (a smoke run)")
    p.add_argument("--tokenizer", type=Path, help="the recipe's word-level tokenizer (default: built, ~20 s)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, --quick 2)")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/attention-cpu[-quick].md")
    args = p.parse_args()
    torch.set_num_threads(1)
    rounds = args.rounds or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = args.tokenizer
        if tokenizer is None:
            progress("building the recipe's word-level tokenizer (qa1-qa5)")
            tokenizer = Path(tmp) / "tok-word"
            make_tokenizer(TokenizerSpec(kind="word", tasks="qa1-qa5"), tokenizer)
        table = run(tokenizer, 8 if args.quick else 32, 8192 if args.quick else 65536, rounds)
    print(table)
    out = args.out or ROOT / "benchmarks" / "results" / ("attention-cpu-quick.md" if args.quick else "attention-cpu.md")
    out.write_text("# Block-local vs masked windowed attention\n\n" + table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
