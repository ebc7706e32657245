"""Tiny random-weight Hugging Face models written offline: a 2-layer Llama, a byte-level BPE
tokenizer trained here with `tokenizers`, a chat template, and LoRA adapters for it.

``family=`` picks the chat template and special tokens of a real model family
(``tests/model_families.py``); the default is a plain ChatML model. The family's tokens take
ids 0, 1, ... in their order in ``Family.tokens``, each special or not as in the real
tokenizer, so that ``skip_special_tokens`` drops the same tokens the real model's would.

The weights are drawn with a large spread (``initializer_range=0.5``) so that the logits are
peaked: greedy decoding then picks the same token however the batch around it is shaped, which
lets tests compare batched output with solo output exactly. The text is gibberish.
"""

from __future__ import annotations

from pathlib import Path

from tests import model_families as families

CHATML = families.CHATML_TEMPLATE
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_CONTEXT = 256
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France.",
    "A gateway routes each request by model name to an engine that serves it.",
    "Batching shares one forward pass between many sequences; streaming sends tokens early.",
    "Hello world! How are you today? I am fine, thank you. Numbers: 0 1 2 3 4 5 6 7 8 9.",
    "Ünïcödé text: café, naïve, 東京, 🙂 — tokenizers must not split characters badly.",
]


def tiny_tokenizer(chat_template: bool = True, *, family: str = "chatml"):
    """A byte-level BPE (400 tokens) trained here, with the family's tokens first (ids 0...).

    The default (ChatML) has ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` as ids 0, 1, 2.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = families.family(family)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(spec.texts),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer)
    # The trainer registers every token as special; re-register the plain added ones (same
    # ids) as the real tokenizers have them, so that decoding keeps them.
    bpe.add_tokens(
        [AddedToken(t.text, special=False, normalized=False) for t in spec.tokens if not t.special]
    )
    if spec.add_bos and spec.bos is not None:
        _prepend_bos(bpe, spec)
    named = {spec.bos, spec.eos, spec.pad}
    # Real configs list their other control tokens too; the default keeps the tokenizer that
    # tests were written against, byte for byte.
    extra = [t.text for t in spec.tokens if t.special and t.text not in named]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        **({"extra_special_tokens": extra} if family != "chatml" else {}),
    )
    if chat_template:
        tokenizer.chat_template = spec.chat_template
    return tokenizer


def _prepend_bos(bpe, spec: families.Family) -> None:
    """Make the tokenizer add bos when asked for special tokens, as Llama's and Mistral's do."""
    from tokenizers import processors

    bos, bos_id = spec.bos, spec.token_id(spec.bos)
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B:1",
        special_tokens=[(bos, bos_id)],
    )


def hf_token_id(text: str, *, family: str = "chatml") -> int:
    """The id of a family token in the vocabulary ``write_tiny_hf_model`` writes (for
    ``logit_bias``); the same id ``tiny_gguf.gguf_token_id`` gives."""
    return families.family(family).token_id(text)


def write_tiny_hf_model(
    folder: Path,
    *,
    chat_template: bool = True,
    seed: int = 0,
    family: str = "chatml",
    context: int = TINY_CONTEXT,
) -> Path:
    """Write a loadable model folder (config, safetensors, tokenizer) in about 0.2 s."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = families.family(family)
    tokenizer = tiny_tokenizer(chat_template, family=family)
    eos = tokenizer.convert_tokens_to_ids(spec.eos)
    eog = [tokenizer.convert_tokens_to_ids(t) for t in spec.eog]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos if len(eog) == 1 else eog,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = eos if len(eog) == 1 else eog
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_lora(base: Path, folder: Path, *, seed: int) -> Path:
    """A random (non-zero) LoRA adapter for the model in ``base``: it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(folder)
    return folder
