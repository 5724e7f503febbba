"""A tiny random-weight Qwen2.5-VL, built offline in about a second.

No model weights can be downloaded where the tests run, yet the trainer, the `hf:` and `vllm:`
backends and the vLLM server all need a real Qwen2.5-VL directory to load. This module builds one
from scratch: a small config with the real architecture (M-RoPE, windowed vision tower, 2×2
spatial merge, temporal patches of 2 frames), a byte-level BPE tokenizer trained on generated
text, a Qwen-style chat template that renders image and video parts, and Qwen2-VL image/video
processors with a small pixel budget. Its weights are random, so its text is gibberish: it exists
to exercise code paths, shapes and token accounting, not to answer questions.

Sizes are chosen for the slowest consumer: vLLM's CPU attention needs head_dim >= 32, so the text
model has 2 heads of 32 (hidden 64) and 1 KV head; `mrope_section` [4, 6, 6] splits the 16 rotary
frequencies over time, height and width.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# The Qwen2.5-VL special tokens, in the order they get the lowest ids.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
VOCAB_SIZE = 3072
# Images and video frames are resized into [MIN_PIXELS, MAX_PIXELS] (multiples of 28×28), so a
# frame costs at most 16 merged visual tokens and a tiny model's context stays small.
MIN_PIXELS = 28 * 28 * 4
MAX_PIXELS = 28 * 28 * 16
MAX_POSITIONS = 8192
# Weights drawn with std 0.1 rather than transformers' 0.02: at 0.02 a 64-wide model's attention is
# nearly uniform, so its output ignores positions (a video's fps, padding mistakes) and tests of
# those would pass vacuously.
INIT_STD = 0.1

# Qwen2-VL's template, plus: text parts are recognised by their `type` first (rows that went
# through Arrow carry `None` for absent keys), and each assistant turn is wrapped in
# `{% generation %}` so `return_assistant_tokens_mask=True` marks exactly the trained tokens.
CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- set kind = part['type'] if part['type'] is defined and part['type'] is not none else '' -%}"
    "{%- if kind in ('image', 'image_url') or (kind == '' and part['image'] is defined and part['image'] is not none) -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif kind in ('video', 'video_url') or (kind == '' and part['video'] is defined and part['video'] is not none) -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['text'] is defined and part['text'] is not none -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}{{ render(message['content']) }}{{ '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}{{ render(message['content']) }}{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Vocabulary for the generated tokenizer corpus: the words, tags and number formats our prompts
# and datasets actually use, so they tokenize into few pieces like they would with a real model.
_NOUNS = (
    "person man woman child car truck bicycle motorcycle bus train dog crowd group street road "
    "sidewalk intersection parking lot shop store bank office building door window fence wall "
    "camera frame video scene clip bag knife gun fire smoke water floor stairs corridor station "
    "platform highway bridge field park market kitchen room hallway elevator entrance exit"
).split()
_VERBS = (
    "walks runs stands falls fights steals hits pushes grabs throws drives crashes explodes burns "
    "enters leaves opens breaks climbs chases attacks shoots carries drops waits looks moves stops "
    "turns approaches escapes gathers argues kicks punches robs vandalizes loiters"
).split()
_ADJECTIVES = (
    "normal abnormal sudden suspicious violent calm crowded empty dark bright fast slow large "
    "small red blue black white left right upper lower central near far unusual typical"
).split()
_CLASSES = (
    "Abuse Arrest Arson Assault Burglary Explosion Fighting Normal RoadAccidents Robbery Shooting "
    "Shoplifting Stealing Vandalism Riot Falling Intrusion Loitering Pursuit Traffic"
).split()
_TAGS = ("think", "answer", "reflection", "which", "what", "when", "where", "why", "how")
_CONNECTIVES = ("and", "then", "while", "because", "so", "but", "after", "before", "when", "the", "a", "of", "in", "at", "on", "to", "is", "are")
_ONSETS = ("", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl", "ch", "sh", "th", "gr", "br")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y")
_CODAS = ("", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "ck", "st", "rt", "x")


def _pseudo_word(rng: random.Random) -> str:
    """A pronounceable made-up word: gives the BPE enough distinct subwords to fill its vocabulary."""
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(rng.randint(1, 3)))


def _sentence(rng: random.Random) -> str:
    """One plausible caption-like sentence."""
    words = [rng.choice(_ADJECTIVES), rng.choice(_NOUNS), rng.choice(_VERBS), rng.choice(_CONNECTIVES), rng.choice(_NOUNS)]
    if rng.random() < 0.5:
        words += [rng.choice(_CONNECTIVES), rng.choice(_ADJECTIVES), rng.choice(_NOUNS), rng.choice(_VERBS)]
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice((".", ".", "!", "?", ","))


def _number(rng: random.Random) -> str:
    """Times, spans, scores and percentages the way our records print them."""
    return rng.choice((
        f"{rng.uniform(0, 300):.1f}",
        f"{rng.uniform(0, 1):.2f}",
        f"{rng.randint(0, 9999)}",
        f"[{rng.uniform(0, 1):.2f}, {rng.uniform(0, 1):.2f}]",
        f"{rng.uniform(0, 60):.1f}s - {rng.uniform(0, 60):.1f}s",
        f"{rng.randint(0, 100)}%",
    ))


def _line(rng: random.Random) -> str:
    """One line of the corpus: prose, a tagged answer, a multiple-choice question or JSON."""
    kind = rng.randrange(6)
    if kind == 5:
        return " ".join(_pseudo_word(rng) for _ in range(rng.randint(3, 12))).capitalize() + "."
    if kind == 0:
        return " ".join(_sentence(rng) for _ in range(rng.randint(1, 4)))
    if kind == 1:
        tag = rng.choice(_TAGS)
        return f"<{tag}>{_sentence(rng)} {_number(rng)}</{tag}>"
    if kind == 2:
        options = " ".join(f"{letter}. {rng.choice(_CLASSES)}" for letter in "ABCD")
        return f"Question: What happens in the video? {options} Answer: {rng.choice('ABCD')}"
    if kind == 3:
        return json.dumps({"label": rng.choice(_CLASSES), "start": _number(rng), "end": _number(rng), "score": rng.randint(0, 10)})
    return f"The anomaly is {rng.choice(_CLASSES)} from {_number(rng)} to {_number(rng)} at the {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}."


def corpus(seed: int = 0, lines: int = 6000) -> list[str]:
    """Deterministic generated training text for the tokenizer (plus every tag and class verbatim)."""
    rng = random.Random(seed)
    fixed = [f"<{tag}> </{tag}>" for tag in _TAGS] + [" ".join(_CLASSES), "0123456789 .,:;!?()[]{}<>/-+=*#'\"\n"]
    return fixed * 20 + [_line(rng) for _ in range(lines)]


def build_tokenizer(seed: int = 0):
    """Train a Qwen2-style byte-level BPE (same split regex and normaliser) on generated text."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus(seed), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=MAX_POSITIONS,
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        padding_side="left",
    )
    return tokenizer


def build_config(tokenizer):
    """The small Qwen2.5-VL config; special-token ids come from the trained tokenizer."""
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": MAX_POSITIONS,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
        "initializer_range": INIT_STD,
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 1,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "initializer_range": INIT_STD,
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        initializer_range=INIT_STD,
        dtype="float32",
    )


def build_processor(tokenizer):
    """Qwen2.5-VL processor with a small pixel budget for images and video frames."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, temporal_patch_size=2, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(
        size=size, patch_size=14, temporal_patch_size=2, merge_size=2,
        do_sample_frames=False, cap_pixels_per_frame=True, max_video_tokens=MAX_POSITIONS,
    )
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a loadable random-weight Qwen2.5-VL (model, tokenizer, processors, template) to `out_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed)
    config = build_config(tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.bos_token_id],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir)
    build_processor(tokenizer).save_pretrained(out_dir)
    return out_dir
