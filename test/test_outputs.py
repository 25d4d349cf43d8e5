"""Output paths are checked before any work (core/outputs.py), in every verb that writes; Ctrl-C in training."""
import argparse
import os

import pytest
import torch

from demoprof_ros.core.outputs import OutputPathError, check_output_dir, check_output_file, output_dir_arg

from conftest import TEST_DATA
from helpers_train import interrupt_after_first_epoch

PHOTO = TEST_DATA / "group_photos" / "obama_family_2011.jpg"


@pytest.fixture
def places(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir").mkdir()
    return tmp_path


@pytest.mark.parametrize("relative, message", [
    ("file.txt", "exists and is not a folder"),
    ("file.txt/sub", "is a file, not a folder"),
    ("", "empty path"),
])
def test_bad_output_dirs(places, relative, message):
    with pytest.raises(OutputPathError, match=message):
        check_output_dir(places / relative if relative else "")


@pytest.mark.parametrize("relative, suffixes, message", [
    ("dir", None, "is a folder"),
    ("file.txt/out.png", None, "is a file, not a folder"),
    ("dir/out.txt", (".png",), r"ending in \.png"),
])
def test_bad_output_files(places, relative, suffixes, message):
    with pytest.raises(OutputPathError, match=message):
        check_output_file(places / relative, suffixes=suffixes)


def test_good_outputs_are_accepted_and_nothing_is_created(places):
    assert check_output_dir(places / "dir") == places / "dir"
    assert check_output_dir(places / "new" / "deeper") == places / "new" / "deeper"
    assert check_output_file(places / "dir" / "x.png", suffixes=(".png",)) == places / "dir" / "x.png"
    assert check_output_file(places / "file.txt") == places / "file.txt"  # overwriting a file is allowed
    assert not (places / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder_is_refused(places):
    (places / "dir").chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="not writable"):
            check_output_dir(places / "dir" / "out")
    finally:
        (places / "dir").chmod(0o700)


def test_argparse_type_makes_it_a_usage_error(places, capsys):
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--output", type=output_dir_arg("--output"))
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--output", str(places / "file.txt")])
    assert info.value.code == 2
    assert "argument --output: --output" in capsys.readouterr().err


def run_cli(argv, capsys):
    from demoprof_ros.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["profile", str(PHOTO), "--annotate", "{file}"], "exists and is not a folder"),
    (["profile", str(PHOTO), "--annotate", "{file}/sub"], "is a file, not a folder"),
    (["profile", str(PHOTO), "--annotate", "{tmp}/out.mp4"], "exactly one video input"),
    (["profile", str(PHOTO), "--text-cache-dir", "{file}"], "exists and is not a folder"),
    (["profile", str(PHOTO), "--prompts", "{tmp}/nope.yaml"], "prompts file not found"),
    (["eval", "--data", "{tmp}", "--output", "{file}"], "exists and is not a folder"),
    (["eval", "--data", "{tmp}/nope.csv", "--output", "{tmp}/out"], "--data: not found"),
    (["demo", "{tmp}/nope.jpg"], "source not found"),
    (["experiment", "{tmp}/x.yaml", "--output", "{file}"], "exists and is not a folder"),
    (["retrieve", "a face", "--images", "{tmp}", "--sheet", "{tmp}"], "is a folder"),
    (["retrieve", "a face", "--images", "{tmp}", "--sheet", "{tmp}/sheet.txt"], "ending in .png"),
    (["retrieve", "a face", "--images", "{tmp}", "--cache-dir", "{file}"], "exists and is not a folder"),
    (["retrieve", "", "--images", "{tmp}"], "the query is empty"),
    (["retrieve", "   ", "--images", "{tmp}"], "the query is empty"),
    (["card", "{tmp}", "--output", "{tmp}/card.txt"], "ending in .md"),
    (["train", "--train", "{file}", "--output", "{file}"], "exists and is not a folder"),
    (["train", "--train", "{file}", "--output", "{tmp}/run", "--cache", "{file}/c"], "is a file, not a folder"),
])
def test_cli_refuses_bad_outputs_before_loading_anything(tmp_path, argv, needle, capsys, monkeypatch):
    from demoprof_ros.core import models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the paths were checked")

    monkeypatch.setattr(models, "load_tiny", no_model)
    (tmp_path / "file").write_text("x")
    argv = [a.format(tmp=tmp_path, file=tmp_path / "file") for a in argv]
    code, err = run_cli(argv + (["--model", "tiny"] if argv[0] in ("profile", "eval", "retrieve", "train") else []),
                        capsys)
    assert code == 2, err
    assert needle in err
    assert err.count("error:") == 1 and "Traceback" not in err, err  # one message


# --- Ctrl-C in training ------------------------------------------------------------------------------------------

def test_ctrl_c_in_training_keeps_the_last_epoch_and_exits_130(shared_data, tmp_path, monkeypatch, capsys):
    from demoprof_ros.training import trainer as train
    from demoprof_ros.training.datasets import read_dataset, write_labels_csv

    samples, _ = read_dataset(shared_data / "fairface_val_sample")
    labels = write_labels_csv(tmp_path / "labels.csv", samples[:16])
    interrupt_after_first_epoch(monkeypatch)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = train.main(["--model", "tiny", "--train", str(labels), "--output", str(tmp_path / "run"),
                           "--epochs", "3", "--batch-size", "4", "--workers", "0", "--device", "cpu",
                           "--no-progress"])
    finally:
        torch.set_num_threads(before)
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and str(tmp_path / "run") in err
    assert "Traceback" not in err
    state = torch.load(tmp_path / "run" / "seed_0" / "resume.pt", weights_only=True)
    assert state["epoch"] == 0 and len(state["history"]) == 1
    assert (tmp_path / "run" / "seed_0" / "model.safetensors").is_file()  # epoch 1 was the best so far
