"""`--device`: auto | cpu | cuda. Only the CPU path runs here (no GPU on the test
machines); the CUDA path is checked by what can be checked without one: the one-line
error, the backend choice, and that every tensor a method makes follows the model's
device (the meta device stands in for a second device where torch allows it)."""

import ast
import json
from pathlib import Path

import pytest
import torch

from edge_mla.cli.main import main
from edge_mla.errors import EdgeMlaError
from edge_mla.models import ModelConfig, build_model
from edge_mla.train.config import DEVICES, HEAD_KIND, TrainConfig
from edge_mla.train.device import resolve_device
from edge_mla.train.dist import _bind_gpu, backend_for
from edge_mla.train.methods import make_method

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
TINY = ["--dataset", "demo", "--epochs", "1", "--limit", "64", "--batch-size", "32", "--val-limit", "32", "--threads", "1", "--no-progress", "--no-test"]


@no_cuda
@pytest.mark.parametrize("extra", [[], ["--nproc", "2"]])
def test_cuda_without_cuda_is_one_line_and_no_run_folder(tmp_path, capsys, extra):
    out = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--dataset", "demo", "--batch-size", "32", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device cuda: CUDA is not available" in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cpu_and_auto_train_and_record_the_device(tmp_path, demo_cache, device):
    out = tmp_path / device
    assert main(["train", *TINY, "--device", device, "--out", str(out)]) == 0
    conf = json.loads((out / "config.json").read_text())
    assert conf["device"] == ("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
    assert conf["train"]["device"] == device  # what was asked, beside what it resolved to
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert state and all(v.device.type == "cpu" for v in state.values())


def test_device_choices_have_one_home(capsys):
    assert DEVICES == ("auto", "cpu", "cuda") and TrainConfig().device == "auto"
    with pytest.raises(EdgeMlaError, match="unknown --device 'tpu'"):
        TrainConfig(device="tpu")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--device {auto,cpu,cuda}" in help_text and "auto = cuda when torch.cuda.is_available() else cpu" in help_text


def test_a_config_naming_cuda_still_loads_without_cuda():
    """A run trained on a GPU keeps "cuda" in its config; evaluating it elsewhere must not fail."""
    assert TrainConfig(device="cuda").device == "cuda"


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(EdgeMlaError, match="--device cuda"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda"


def test_backend_for():
    assert backend_for("cuda") == "nccl" and backend_for("cuda:1") == "nccl" and backend_for(torch.device("cuda", 0)) == "nccl"
    assert backend_for("cpu") == "gloo" and backend_for(torch.device("cpu")) == "gloo"


@no_cuda
def test_a_rank_without_its_gpu_is_one_line():
    with pytest.raises(EdgeMlaError, match="local rank 0 needs GPU 0 but this machine has 0"):
        _bind_gpu(0)


def _model(method, device="cpu"):
    torch.manual_seed(0)
    return build_model(ModelConfig(preset="tiny", head=HEAD_KIND[method])).to(device)


@pytest.mark.parametrize("method", ["mla", "joint", "unimodal", "ogm_ge", "mmpareto"])
def test_methods_follow_the_model_device(method):
    m = make_method(_model(method), TrainConfig(method=method))
    assert m.device == torch.device("cpu")
    if method == "mla":
        assert m.projector.P.device == m.device
    if method == "ogm_ge":
        assert m.noise.device == m.device


def test_mla_projector_is_made_on_another_device():
    """The meta device as a stand-in for a GPU: P is created where the model is."""
    m = make_method(_model("mla", "meta"), TrainConfig(method="mla"))
    assert m.device.type == "meta" and m.projector.P.device.type == "meta"


FACTORIES = {"zeros", "ones", "eye", "randn", "rand", "randint", "empty", "full", "arange", "tensor", "Generator"}


@pytest.mark.parametrize("name", ["methods.py", "owm.py", "trainer.py"])
def test_every_tensor_factory_names_its_device(name):
    """A torch.zeros/randn/Generator/... without device= lands on the CPU whatever the
    model's device: the kind of slip no CPU test catches. (``*_like`` follow their input.)"""
    src = Path(__file__).resolve().parents[1] / "edge_mla" / "train" / name
    missing = []
    for node in ast.walk(ast.parse(src.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES:
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                if not any(k.arg == "device" for k in node.keywords):
                    missing.append(f"{name}:{node.lineno} torch.{node.func.attr}")
    assert not missing, missing
