"""The main job, on a small slice of the real Fashion-MNIST."""

import json
import os

import pytest

from keras_distill import cli, datasets

needs_data = pytest.mark.skipif(datasets.find_fashion_mnist() is None,
                                reason="Fashion-MNIST is not on this machine")


@needs_data
def test_main_job_runs_and_caches_the_teacher(tmp_path, capsys):
    args = ["--epochs", "1", "--teacher-epochs", "3", "--prune-epochs", "1",
            "--qat-epochs", "1", "--train-samples", "2000",
            "--test-samples", "500", "--cache-dir", str(tmp_path / "cache"),
            "--output-dir", str(tmp_path / "out"), "--no-download"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert "teacher: training 3 epochs" in first
    for name in ("| teacher |", "| student (scratch) |", "| student (distilled) |"):
        assert name in first
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["student (distilled)"]["params"] * 10 <= rows["teacher"]["params"]
    # Real data, real learning: far above the 10% of chance after one epoch.
    assert rows["teacher"]["test_accuracy"] > 0.5
    assert rows["student (scratch)"]["test_accuracy"] > 0.3
    assert os.path.exists(tmp_path / "out" / "student_distilled.weights.h5")
    # Every artifact was exported and measured by running the .tflite file.
    assert rows["student (distilled, 50% sparse)"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert rows["student (distilled, sparse, QAT)"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    artifacts = {r["name"]: r for r in results["artifacts"]}
    assert set(artifacts) == {"teacher", "student (scratch)", "student (distilled)",
                              "student (distilled), int8",
                              "student (distilled, sparse, QAT), int8"}
    for row in artifacts.values():
        assert (tmp_path / "out" / row["file"]).stat().st_size == row["size_bytes"]
        assert row["latency_median_us"] > 0
    assert artifacts["student (distilled)"]["agreement"] == 1.0
    int8 = artifacts["student (distilled), int8"]
    assert int8["size_bytes"] < 0.5 * artifacts["student (distilled)"]["size_bytes"]
    assert abs(int8["test_accuracy"] - rows["student (distilled)"]["test_accuracy"]) < 0.03
    # The sparse QAT int8 file: as accurate as its Keras QAT model, and its
    # zeros make it compress better than the dense int8 file.
    qat_int8 = artifacts["student (distilled, sparse, QAT), int8"]
    assert qat_int8["agreement"] > 0.97
    assert qat_int8["gzip_bytes"] < int8["gzip_bytes"]
    assert (tmp_path / "out" / "accuracy_vs_size.png").stat().st_size > 1000
    assert "| student (distilled), int8 |" in (tmp_path / "out" / "results.md").read_text()

    args.append("--no-export")
    assert cli.main(args) == 0
    second = capsys.readouterr().out
    assert "teacher: loaded from cache" in second
    assert "teacher: training" not in second
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert again["rows"][0]["test_accuracy"] == rows["teacher"]["test_accuracy"]


@pytest.mark.parametrize("flag,value", [
    ("--epochs", "0"), ("--alpha", "1.5"), ("--temperature", "-1"),
    ("--train-samples", "-3")])
def test_bad_flags_name_the_setting(flag, value, capsys):
    assert cli.main([flag, value]) == 2
    assert flag in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["--data-dir", str(tmp_path / "nowhere"), "--cache-dir",
                     str(tmp_path), "--output-dir", str(tmp_path / "o")])
    assert code == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


@needs_data
@pytest.mark.parametrize("method", ["dkd", "kd+l2", "kd+at", "kd+fsp", "rkd"])
def test_methods_run(method, tmp_path):
    from keras_distill import pipeline

    config = pipeline.PipelineConfig(epochs=1, teacher_epochs=1, train_samples=512,
                                     test_samples=128, method=method, alpha=0.5,
                                     cache_dir=str(tmp_path), allow_download=False)
    (x, y), _ = pipeline.prepare_data(config)
    teacher, _, _ = pipeline.get_teacher(config, x, y, log=lambda m: None)
    student, seconds = pipeline.train_distilled(config, teacher, x, y)
    assert seconds > 0 and student.count_params() == 13978


def test_feature_terms_alone_need_the_hard_label_loss(capsys):
    assert cli.main(["--method", "rkd"]) == 2
    assert "--alpha" in capsys.readouterr().err
    assert cli.main(["--method", "rkd", "--alpha", "0.5", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err


@pytest.mark.parametrize("method,word", [("kd+dkd", "two logits terms"),
                                         ("kd+hint", "unknown"), ("", "string")])
def test_bad_methods(method, word):
    from keras_distill import pipeline

    with pytest.raises(ValueError, match=word):
        pipeline.parse_method(method)
    with pytest.raises(ValueError, match="no feature maps"):
        pipeline.parse_method("kd+l2", student="mlp")
