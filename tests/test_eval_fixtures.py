"""Tiny Hugging Face checkpoints for the evaluation tests: a Llama model and a BPE tokenizer trained here."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lm2 import LM2Config, LM2ForCausalLM
from tests.conftest import TINY_BACKBONE

CORPUS = [
    "Mary moved to the bathroom. John went to the hallway. Where is Mary? bathroom",
    "Daniel picked up the football. How many objects is Daniel carrying? none one two three",
    "Is John in the kitchen? yes no maybe. What is Sandra carrying? apple, milk, nothing",
    "The following are multiple choice questions (with answers) about abstract algebra. Answer: A B C D",
    "<context> </context> Question: Answer: garden office bedroom Bill Fred Jeff",
]


def make_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE: it encodes any text, so MMLU questions and ppl files work too."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def make_checkpoint(path: Path, seed: int = 0, family: str = "llama") -> Path:
    """Save a randomly initialised tiny Llama (or LM2, with memory) and its tokenizer to ``path``."""
    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    shape = dict(
        **TINY_BACKBONE,
        vocab_size=len(tokenizer),
        max_position_embeddings=8192,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if family == "lm2":
        config = LM2Config(**shape, memory_slots=8, memory_heads=2, segment_length=8)
        model = LM2ForCausalLM(config)
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    # A larger output scale keeps greedy choices well separated, so padding-level float noise never flips them.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
