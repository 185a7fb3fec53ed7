"""The opt-in CLIP evaluation with a tiny randomly initialised CLIP built here (no real weights can be downloaded
in the test environment; real use needs e.g. openai/clip-vit-base-patch32)."""

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_main

# `make test` installs transformers into a folder of its own (Makefile, CLIP_LIB): in the venv, torchmetrics would
# import it at the start of every process of the suite.
CLIP_LIB = ROOT / ".venv" / "clip"
if CLIP_LIB.is_dir() and str(CLIP_LIB) not in sys.path:
    sys.path.append(str(CLIP_LIB))
CLIP_ENV = {"PYTHONPATH": str(CLIP_LIB)} if CLIP_LIB.is_dir() else {}
transformers = pytest.importorskip("transformers")


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of GPT-2/CLIP byte-level BPE, one per byte (Radford et al. 2019)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    table = dict(zip(keep + extra, [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]))
    return [table[b] for b in range(256)]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A 32×32-input CLIP with a character-level tokenizer, saved as save_pretrained writes a real one."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_clip")
    chars = byte_symbols()
    vocab = {t: i for i, t in enumerate([*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    special = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
               "pad_token_id": vocab["<|endoftext|>"]}
    config = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, **small, **special),
                        vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_scores_and_zero_shot_accuracy_match_clip_itself(tiny_clip):
    from diffusion.clip_eval import PROMPTS, clip_evaluate, load_clip

    assert PROMPTS == ("a photo of the digit {digit}", "a blurry image of the digit {digit}",
                       "a clear handwritten {digit}")  # the report's, with numerals: "a photo of the digit 0"
    model, processor = load_clip(str(tiny_clip))
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randint(0, 256, (12, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(12) % 3
    names, prompts = ["zero", "one", "two"], list(PROMPTS)
    out = clip_evaluate(images, labels, names, model, processor, prompts, batch_size=5)
    own_logits = []
    for template in prompts:  # CLIP's own logits, scaled back to cosines
        inputs = processor(text=[template.format(digit=c) for c in range(3)], images=list(images.expand(-1, 3, -1, -1)),
                           return_tensors="pt", padding=True)
        with torch.no_grad():
            raw = model(**inputs).logits_per_image
        logits = raw / model.logit_scale.exp()
        own = logits[torch.arange(12), labels]
        own_logits.append(raw[torch.arange(12), labels])
        assert out[template]["clip_score"] == pytest.approx(100 * own.mean().item(), abs=1e-3)
        assert out[template]["zero_shot_accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
        assert out[template]["per_class_clip_score"][1] == pytest.approx(100 * own[labels == 1].mean().item(), abs=1e-3)
    assert 0 <= out["first_preferred"] <= 1 and len(out["per_class_first_preferred"]) == 3
    # the seed report's percentages: CLIP's own softmax over the three prompts of each image's class
    share = 100 * torch.softmax(torch.stack(own_logits, dim=1), dim=1)
    for j, template in enumerate(prompts):
        assert out[template]["percent"] == pytest.approx(share[:, j].mean().item(), abs=1e-3)
        assert out[template]["per_class_percent"][2] == pytest.approx(share[labels == 2, j].mean().item(), abs=1e-3)
    assert sum(out[t]["percent"] for t in prompts) == pytest.approx(100, abs=1e-3)


def test_a_transformers_release_that_cannot_load_the_model_is_one_line(tiny_clip, monkeypatch):
    """E.g. transformers 5.25 without `use_kernels=False` asked for the `kernels` package: say what to install."""
    from diffusion.clip_eval import load_clip

    def refuse(*args, **kwargs):
        raise ValueError("Kernels are not available. Please install a compatible version\nmore detail")

    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", refuse)
    load_clip.cache_clear()
    with pytest.raises(ValueError) as err:
        load_clip(str(tiny_clip))
    load_clip.cache_clear()
    message = str(err.value)
    assert "\n" not in message and f"transformers {transformers.__version__} could not load" in message
    assert "Kernels are not available" in message and "pip install -c constraints.txt" in message


@pytest.mark.slow
def test_sample_py_writes_clip_metrics(tiny_ckpt, tiny_clip, tmp_path):
    r = run_main("sample.py", f"ckpt_path={tiny_ckpt}", "mode=bulk", "num_samples=20", "evaluate=true",
                 "sampler.steps=3", f"eval.clip={tiny_clip}", f"hydra.run.dir={tmp_path}")  # CLIP_LIB on sys.path
    assert r.returncode == 0, r.stderr[-3000:]
    clip = json.loads((tmp_path / "metrics.json").read_text())["clip"]
    assert clip["prompts"] == ["a photo of the digit {digit}", "a blurry image of the digit {digit}",
                               "a clear handwritten {digit}"]  # the seed report's three, by default
    assert sum(clip[p]["percent"] for p in clip["prompts"]) == pytest.approx(100, abs=1e-3)
    assert "%, zero-shot accuracy" in r.stdout
    assert len(clip["a photo of the digit {digit}"]["per_class_clip_score"]) == 10 and clip["num_samples"] == 20
    assert "CLIP: " in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["mode=bulk", "evaluate=true", "eval.clip=/no/such/clip"], "CLIP weights '/no/such/clip' could not be loaded"),
    (["eval.clip=/no/such/clip"], "eval.clip needs mode=bulk evaluate=true"),
])
def test_bad_clip_options_are_one_line(tiny_ckpt, tmp_path, args, message):
    r = run_main("sample.py", f"ckpt_path={tiny_ckpt}", *args, f"hydra.run.dir={tmp_path}")  # CLIP_LIB on sys.path
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and message in lines[0], r.stderr


@pytest.mark.slow
def test_the_seed004_preset_evaluates_its_best_checkpoint_with_clip_at_the_reports_prompts(tiny_clip, tmp_path):
    """experiment=seed004 shortened to two tiny epochs: the best validation checkpoint is the one evaluated, and
    metrics.json holds CLIP's percentages for the report's three prompts at every ω of its sweep."""
    r = run_main("train.py", "experiment=seed004", f"eval.clip={tiny_clip}", "trainer.max_epochs=2",
                 "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2", "data.batch_size=8",
                 "eval.num_samples=20", "eval.guidance=[0,2]", "sampler.steps=3", "callbacks.progress=null",
                 "logger=csv", "callbacks.sample_grid.n_per_class=1", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    (best,) = (tmp_path / "checkpoints").glob("best-*.ckpt")
    step = torch.load(best, map_location="cpu", weights_only=False)["global_step"]
    assert f"eval.weights=best: the weights of step {step}, the best validation loss" in r.stdout
    for w in (0, 2):
        m = json.loads((tmp_path / "eval" / f"guidance={w}" / "metrics.json").read_text())
        assert m["step"] == step and m["clip"]["prompts"] == ["a photo of the digit {digit}",
                                                              "a blurry image of the digit {digit}",
                                                              "a clear handwritten {digit}"]
        assert sum(m["clip"][p]["percent"] for p in m["clip"]["prompts"]) == pytest.approx(100, abs=1e-3)
