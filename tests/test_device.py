"""Device and dtype resolution (``backdoor_core.device``) and the CLI's --device/--dtype."""

import pytest
import torch

from backdoor_core.device import DeviceError, available_devices, resolve_device, resolve_dtype


def test_auto_picks_the_best_available_device():
    assert resolve_device("auto") == torch.device(available_devices()[0])
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")
    assert available_devices()[-1] == "cpu"


def test_absent_or_unknown_devices_are_one_plain_line():
    with pytest.raises(DeviceError, match="Unknown device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
    else:
        with pytest.raises(DeviceError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_dtypes():
    assert resolve_dtype("auto") == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(DeviceError, match="float16 is not supported on the CPU"):
        resolve_dtype("float16", torch.device("cpu"))
    with pytest.raises(DeviceError, match="Unknown dtype"):
        resolve_dtype("int8")


def test_load_model_puts_the_model_where_asked(tmp_path):
    from backdoor_core.models import load_model, save_model, tiny_model

    lm = tiny_model()
    out = load_model(save_model(lm.model, lm.tokenizer, tmp_path / "m"), device="cpu", dtype="bfloat16")
    p = next(out.model.parameters())
    assert p.device.type == "cpu" and p.dtype == torch.bfloat16


def test_cli_device_error_is_one_line_exit_2(capsys):
    from backdoor_core.cli import main

    rc = main(["inspect", "--text", "a good film", "--device", "gpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: Unknown device") and "\n" not in err


def test_launcher_ranks(monkeypatch):
    from backdoor_core.device import is_main_process, local_rank

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert is_main_process() and local_rank() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_main_process() and local_rank() == 1


def test_every_verb_takes_device_and_dtype_defaulting_to_settings():
    import inspect

    from backdoor_core import settings as S
    from backdoor_core.cli import build_parser
    from backdoor_core.models import load_model

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    verbs = {name: p for name, p in sub.choices.items() if name != "zoo"}
    zoo = next(a for a in sub.choices["zoo"]._actions if a.__class__.__name__ == "_SubParsersAction")
    verbs["zoo build"] = zoo.choices["build"]
    assert {"inspect", "attack", "scan", "sanitize", "zoo build"} <= set(verbs)
    for name, p in verbs.items():
        defaults = {a.dest: a.default for a in p._actions}
        assert defaults["device"] is S.DEVICE and defaults["dtype"] is S.DTYPE, name
    params = inspect.signature(load_model).parameters
    assert params["device"].default is S.DEVICE and params["dtype"].default is S.DTYPE


def test_usable_cores_follow_the_affinity_set(monkeypatch):
    """A container or ``taskset`` limit: the cores this process may use, not the machine's (``os.cpu_count``), set
    the busy check and the app's job slots."""
    import os

    from backdoor_core import device

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert device.usable_cores() == 2
    monkeypatch.delattr(os, "sched_getaffinity")
    assert device.usable_cores() == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert device.usable_cores() == 1
