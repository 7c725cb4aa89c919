"""Bad input gives one clear line (expected vs got), as ValueError/TypeError, never a C++ backtrace."""

import pytest
import torch

import osteonet


def one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg and "frame #" not in msg and "Exception raised from" not in msg, msg
    return msg


def test_unknown_model_suggests_nearest():
    with pytest.raises(ValueError) as e:
        osteonet.create_model("resnet05")
    assert "did you mean 'resnet50'" in one_line(e)
    with pytest.raises(ValueError) as e:
        osteonet.create_model("mobilenetv2")
    assert "'mobilenet_v2'" in one_line(e)


def test_unknown_attention_and_option():
    with pytest.raises(ValueError) as e:
        osteonet.create_model("resnet50", attention="sk2")
    assert "did you mean 'sk'" in one_line(e)
    with pytest.raises(ValueError) as e:
        osteonet.create_model("vgg16", dropuot=0.3)
    assert "did you mean 'dropout'" in one_line(e)
    with pytest.raises(ValueError) as e:
        osteonet.create_model("resnet50", attention="ds", attention_placement="everywhere")
    assert "'blocks'" in one_line(e) or "'dsnet'" in one_line(e)
    with pytest.raises(ValueError) as e:
        osteonet.create_model("dsnet_resnet50", attention="se")
    one_line(e)


def test_wrong_option_types():
    with pytest.raises(TypeError) as e:
        osteonet.create_model("inception_v3", aux_logits="yes")
    assert "expected a bool, got str" in one_line(e)
    with pytest.raises(TypeError):
        osteonet.create_model("resnet18", num_classes="3")
    with pytest.raises(TypeError):
        osteonet.create_model("resnet18", attention=3)
    with pytest.raises(TypeError):
        osteonet.create_model("resnet18", attn_reduction=[1, 2])
    with pytest.raises(ValueError):
        osteonet.create_model("resnet18", num_classes=-1)
    with pytest.raises(ValueError) as e:
        osteonet.create_model("resnet18", attention="ds", attn_gate="tanh")
    assert "gate" in one_line(e)


@pytest.fixture(scope="module")
def grey():
    return osteonet.create_model("resnet18", num_classes=3, in_chans=1).eval()


def test_wrong_channels_rank_dtype_size(grey):
    with pytest.raises(ValueError) as e:
        grey(torch.randn(1, 3, 64, 64))
    assert "expected 1 input channels, got 3" in one_line(e)
    with pytest.raises(ValueError) as e:
        grey(torch.randn(1, 64, 64))
    assert "expected a 4-D input (N, C, H, W), got a 3-D tensor" in one_line(e)
    with pytest.raises(TypeError) as e:
        grey(torch.ones(1, 1, 64, 64, dtype=torch.uint8))
    assert "floating-point" in one_line(e)
    with pytest.raises(TypeError) as e:
        grey(torch.ones(1, 1, 64, 64, dtype=torch.float64))
    assert "expected input dtype float" in one_line(e)
    with pytest.raises(ValueError) as e:
        grey(torch.randn(1, 1, 4, 4))
    assert ">= 32" in one_line(e)
    with pytest.raises(TypeError) as e:
        grey([[1.0]])
    assert "expected a torch.Tensor, got list" in one_line(e)
    with pytest.raises(ValueError) as e:
        grey.forward_features(torch.randn(2, 2, 64, 64))
    one_line(e)


def test_inception_aux_size_error():
    m = osteonet.create_model("inception_v3").train()
    with pytest.raises(ValueError) as e:
        m(torch.randn(2, 3, 128, 128))
    assert "aux_logits=false" in one_line(e)


def test_torch_errors_are_one_line_runtime_errors():
    m = osteonet.create_model("resnet18").eval()
    with pytest.raises((RuntimeError, NotImplementedError)) as e:
        m(torch.randn(1, 3, 64, 64).to_sparse())  # passes osteonet's checks, fails inside LibTorch
    one_line(e)


def test_another_torch_than_the_build_is_refused_at_import():
    import subprocess
    import sys

    from osteonet._build_info import TORCH_VERSION

    assert TORCH_VERSION.split("+")[0] == torch.__version__.split("+")[0]
    code = "import torch; torch.__version__ = '9.9.9'; import osteonet"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"ImportError: osteonet was built against torch {TORCH_VERSION}, but torch 9.9.9 is installed; "
                    "rebuild it against this torch: pip install --no-build-isolation --no-deps .")


def test_one_line_helpers_hand_worked():
    """osteonet._errors: the first non-empty line (the type's name for an empty message) and the nearest name
    by edit distance (the first of equals), as the C++ registry's "did you mean"."""
    from osteonet._errors import first_line, nearest

    assert first_line(ValueError("\nshape mismatch\n  at layer1")) == "shape mismatch"
    assert first_line(KeyError()) == "KeyError" and first_line(RuntimeError("  \n")) == "RuntimeError"
    assert nearest("resnet5", ["resnet18", "resnet50"]) == "resnet50"  # 1 insertion vs 2 edits
    assert nearest("ab", ["xb", "ay"]) == "xb"  # both at distance 1: the first
    assert nearest("kitten", ["sitting", "mitten"]) == "mitten" and nearest("x", []) == ""
