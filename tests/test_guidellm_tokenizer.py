"""benchmarks/guidellm_tokenizer.py: guidellm's token counts are the emulator's word counts.

The vocabulary checks need nothing beyond the project's environment. The tokenizer
itself is built with `tokenizers`/`transformers`, which are guidellm's and not the
project's: that check runs with the interpreter named by GUIDELLM_PYTHON (default: the
guidellm venv used in docs/guidellm.md) and is skipped where there is none.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from flaskapp.emulator import text
from servers import ROOT

SCRIPT = ROOT / "benchmarks" / "guidellm_tokenizer.py"
GUIDELLM_PYTHON = Path(os.environ.get("GUIDELLM_PYTHON", "/work/venv-guidellm/bin/python"))

spec = importlib.util.spec_from_file_location("guidellm_tokenizer", SCRIPT)
guidellm_tokenizer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(guidellm_tokenizer)


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_every_word_the_emulator_writes_is_one_known_token(seed):
    vocab = guidellm_tokenizer.vocabulary(guidellm_tokenizer.emulator_words())
    tokens, _ = text.token_pool(seed)
    words = "".join(tokens).split()
    unknown = sorted({word for word in words if word not in vocab})
    assert unknown == []


def test_guidellm_prompt_prefix_is_known():
    # guidellm starts each synthetic prompt with "{epoch} {sample} m{turn} " to make it unique.
    marks = set(guidellm_tokenizer.guidellm_marks())
    assert {"0", "17", "99999", "m0", "m99"} <= marks


def test_unknown_word_is_not_special():
    vocab = guidellm_tokenizer.vocabulary(["word"])
    assert vocab[guidellm_tokenizer.UNKNOWN] == 0
    assert {"word", "Word", "word.", "Word."} <= set(vocab)


CHECK = """
import faker, json, sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.argv[2])
fake = faker.Faker()
for seed in range(20):
    fake.seed_instance(seed)
    texts.append("0 %d m0 " % seed + fake.text(max_nb_chars=1500))
out = []
for sample in texts:
    ids = tokenizer.encode(sample)
    first = tokenizer.decode(ids[:37], skip_special_tokens=True)
    out.append([len(ids), len(sample.split()), len(first.split()), ids.count(0)])
print(json.dumps(out))
"""


@pytest.mark.skipif(not GUIDELLM_PYTHON.exists(), reason="no interpreter with transformers "
                                                           "(set GUIDELLM_PYTHON)")
def test_tokenizer_counts_words_as_the_emulator_does(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([str(GUIDELLM_PYTHON), str(SCRIPT), str(tmp_path)], check=True, env=env,
                   capture_output=True, timeout=60)
    assert (tmp_path / "tokenizer.json").exists()
    emulator_answer = text.answer_text(0, [{"role": "user", "content": "Hi"}], 120)
    samples = [emulator_answer, "Unheard-of words: zyzzyva, qoph."]
    result = subprocess.run([str(GUIDELLM_PYTHON), "-c", CHECK, str(tmp_path), json.dumps(samples)],
                            check=True, env=env, capture_output=True, text=True, timeout=60)
    rows = json.loads(result.stdout)
    for tokens, words, decoded_words, unknown in rows:
        assert tokens == words                     # one token per whitespace-separated word
        assert decoded_words == min(37, words)     # a cut prompt keeps its length in words
    assert rows[0][3] == 0                         # the emulator's words are all known
    assert all(row[3] == 0 for row in rows[2:])    # and guidellm's synthetic prompts' words
    assert rows[1][3] == 4                         # an unknown word is one <unk>, kept
