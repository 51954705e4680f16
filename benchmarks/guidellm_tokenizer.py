"""Write a word-level tokenizer directory that guidellm can load offline.

guidellm builds its synthetic prompts with a Hugging Face tokenizer: it encodes Faker
text and decodes the first N token ids, so N is the prompt's length in tokens. With no
hub access it needs a directory that `AutoTokenizer.from_pretrained(directory)` loads.
This one counts tokens as the emulator does (`flaskapp/emulator/wire.py`: a token is
a whitespace-separated word), so guidellm's "256 prompt tokens" is 256 words, and the
emulator's usage reports them (plus its 4 tokens of framing per message).

The vocabulary is Faker's English lorem words (what guidellm's synthetic text is made
of) and the emulator's own words, each as written, capitalised and with a full stop.
So are the numbers below 100,000 and the turn marks `m0`...`m99`, which guidellm writes
at the head of each prompt ("17 42 m0 ...") to make prompts unique. A word outside the
vocabulary encodes to `<unk>`, still one token, and decodes to `<unk>`: it is
deliberately not a special token, so decoding keeps it and the word count holds.

Run it with the guidellm venv's Python, which has `tokenizers`, `transformers` and
`faker` (the project's own environment has none of them and does not need them):

    /work/venv-guidellm/bin/python benchmarks/guidellm_tokenizer.py /tmp/word-tokenizer
    guidellm run ... --tokenizer kind=hf_auto,model=/tmp/word-tokenizer
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Iterable
from pathlib import Path

UNKNOWN = "<unk>"
NUMBERS = 100_000
TURNS = 100
EMULATOR_TEXT = Path(__file__).resolve().parent.parent / "flaskapp" / "emulator" / "text.py"


def emulator_words(path: Path = EMULATOR_TEXT) -> list[str]:
    """Every word of the emulator's grammar, read from its module without importing flaskapp."""
    # Loaded from the file: importing the flaskapp package would need Flask in this venv.
    spec = importlib.util.spec_from_file_location("_emulator_text", path)
    if spec is None or spec.loader is None:
        return []
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    phrases = [*module._SUBJECTS, *module._VERBS, *module._OBJECTS, *module._CLAUSES,
               *module._CONNECTORS]
    return [word for phrase in phrases for word in phrase.split()]


def faker_words() -> list[str]:
    """The words of Faker's English lorem provider, which guidellm's synthetic_text uses."""
    from faker.providers.lorem.en_US import Provider
    return list(Provider.word_list)


def vocabulary(words: Iterable[str]) -> dict[str, int]:
    """Token ids for each word as written, lower-case, capitalised, and each with a full stop."""
    vocab = {UNKNOWN: 0}
    for word in words:
        bare = word.rstrip(".,")
        # capitalize() as Faker starts a sentence ("TV" -> "Tv"), and first-letter upper.
        for form in (word, bare, bare.lower(), bare.capitalize(), bare[:1].upper() + bare[1:]):
            for token in (form, form + ".", form + ","):
                if token and token not in vocab:
                    vocab[token] = len(vocab)
    return vocab


def guidellm_marks() -> list[str]:
    """The counters and turn marks of guidellm's unique prompt prefix, as whole tokens."""
    return [str(n) for n in range(NUMBERS)] + [f"m{turn}" for turn in range(TURNS)]


def build(vocab: dict[str, int]):  # -> transformers.PreTrainedTokenizerFast
    """A fast tokenizer whose tokens are exactly `str.split()`'s words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Words come back joined by single spaces: decode(encode(text)) has text's words.
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    # No post-processor: encode() adds no BOS/EOS, so len(encode(text)) is the word count.
    return PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=1 << 20)


def write(directory: Path) -> int:
    """Save the tokenizer (tokenizer.json, tokenizer_config.json) in directory; its vocabulary size."""
    vocab = vocabulary(faker_words() + emulator_words())
    for mark in guidellm_marks():
        vocab.setdefault(mark, len(vocab))
    tokenizer = build(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    # AutoTokenizer reads the class from here; there is no config.json (no model) to ask.
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return tokenizer.vocab_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a word-level tokenizer (one token per whitespace-separated "
                    "word, as the emulator counts) that guidellm loads from a directory.")
    parser.add_argument("directory", type=Path, help="Where to write tokenizer.json and "
                                                     "tokenizer_config.json.")
    args = parser.parse_args(argv)
    size = write(args.directory)
    print(f"wrote a {size}-word tokenizer to {args.directory}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
