"""`astrai serve --replicas` options and the `serve run` builder, without starting a cluster."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from astrai.server.cli import main
from astrai.server.replicas.serve_app import build_app
from ray.serve.deployment import Application


@pytest.mark.parametrize("flags", [["--ray-address", "127.0.0.1:6379"], ["--routing", "round-robin"],
                                   ["--cpus-per-replica", "1"], ["--ray-app-name", "other"]])
def test_replica_options_need_more_than_one_replica(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *flags])
    assert exit_info.value.code == 2
    assert f"{flags[0]} needs --replicas 2 or more" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "x"])
def test_cpus_per_replica_must_be_a_positive_number(value, capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--replicas", "2", "--cpus-per-replica", value])
    assert "--cpus-per-replica" in capsys.readouterr().err


def test_one_replica_never_imports_ray():
    """The whole single-process serve path (up to a failed model load) runs without Ray."""
    code = ("import sys; from astrai.server.cli import main; "
            "rc = main(['serve', '--port', '0', '--model', '/nonexistent/model.gguf']); "
            "assert rc == 1, rc; assert 'ray' not in sys.modules, 'ray was imported'; print('no ray')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "no ray" in done.stdout, done.stderr[-2000:]


def test_an_unreachable_cluster_is_named_at_once():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "astrai.server.cli", "serve", "--replicas", "2", "--port", "0",
                           "--ray-address", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"could not join the Ray cluster at 127.0.0.1:{port}" in done.stderr


def test_serve_run_builder_takes_config_file_args():
    app = build_app({"model": "smollm2-135m-instruct", "replicas": "3", "dtype": "float32", "max_num_seqs": "8",
                     "no_prefix_cache": "true", "routing": "round-robin", "cpus_per_replica": "0.5"})
    assert isinstance(app, Application)
    with pytest.raises(ValueError, match="unknown argument 'replica'.*known: .*replicas"):
        build_app({"replica": 2})
    with pytest.raises(ValueError, match="max_num_seqs: expected int, got 'many'"):
        build_app({"max_num_seqs": "many"})
    with pytest.raises(ValueError, match="no_prefix_cache: expected true or false"):
        build_app({"no_prefix_cache": "maybe"})
    with pytest.raises(ValueError, match="routing must be one of"):
        build_app({"routing": "random"})
