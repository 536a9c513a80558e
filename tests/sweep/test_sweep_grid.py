"""Grid files: the series forms, shared points, weak-scaling fractions and up-front refusal."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from trainer.sweep.grid import GridError, grid_problems, load_grid, parse_grid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def grid(text: str):
    return parse_grid(tomllib.loads(text))


HEAD = '[sweep]\nname = "t"\nmodel = "resnet50"\nrepeats = 2\n'


def shapes(g):
    return [
        (p.point_id, p.gpus, p.local_batch_size, p.global_batch_size, p.data_fraction, p.series)
        for p in g.points
    ]


def test_constant_gbs_and_constant_lbs_series_share_their_common_point():
    g = grid(
        HEAD
        + '[[series]]\nname = "gbs8"\ngpus = [1, 2, 4]\ngbs = 8\n'
        + '[[series]]\nname = "lbs8"\ngpus = [1, 2]\nlbs = 8\n'
    )
    assert shapes(g) == [
        ("g1-l8-b8", 1, 8, 8, None, ("gbs8", "lbs8")),  # run once, in both series
        ("g2-l4-b8", 2, 4, 8, None, ("gbs8",)),
        ("g4-l2-b8", 4, 2, 8, None, ("gbs8",)),
        ("g2-l8-b16", 2, 8, 16, None, ("lbs8",)),
    ]
    assert g.points[0].scaling == ("strong", "strong")
    assert g.repeats == 2


def test_several_gbs_values_split_into_one_series_each():
    g = grid(HEAD + '[[series]]\nname = "cpu"\ngpus = [1, 2]\ngbs = [4, 8]\n')
    assert [s.name for s in g.series] == ["cpu-gbs4", "cpu-gbs8"]
    assert [p.point_id for p in g.points] == ["g1-l4-b4", "g2-l2-b4", "g1-l8-b8", "g2-l4-b8"]


def test_explicit_pairs_and_accumulation():
    g = grid(HEAD + '[[series]]\nname = "pairs"\npoints = [[1, 256], [2, 64, 256]]\n')
    assert shapes(g) == [
        ("g1-l256-b256", 1, 256, 256, None, ("pairs",)),
        ("g2-l64-b256", 2, 64, 256, None, ("pairs",)),
    ]
    assert g.points[1].accumulation_steps == 2


def test_weak_scaling_fractions_grow_with_gpus_and_full_point_merges_with_strong():
    g = grid(
        HEAD
        + '[[series]]\nname = "ws"\nscaling = "weak"\ngpus = [1, 2, 4]\nlbs = 4\n'
        + '[[series]]\nname = "ss"\ngpus = [4]\nlbs = 4\n'
    )
    assert shapes(g) == [
        ("g1-l4-b4-f0.25", 1, 4, 4, 0.25, ("ws",)),
        ("g2-l4-b8-f0.5", 2, 4, 8, 0.5, ("ws",)),
        ("g4-l4-b16", 4, 4, 16, None, ("ws", "ss")),
    ]
    assert g.points[2].scaling == ("weak", "strong")
    custom = grid(
        HEAD
        + '[[series]]\nname = "ws"\nscaling = "weak"\nbase_fraction = 0.1\ngpus = [2, 4]\nlbs = 1\n'
    )
    assert [p.data_fraction for p in custom.points] == [pytest.approx(0.1), pytest.approx(0.2)]


def test_series_train_flags_make_their_own_points():
    g = grid(
        HEAD
        + "[train]\nepochs = 1\n"
        + '[[series]]\nname = "pre"\ngpus = [1]\nlbs = 2\n'
        + '[[series]]\nname = "fine"\ngpus = [1]\nlbs = 2\ntrain = { mode = "finetune" }\n'
    )
    assert [p.point_id for p in g.points] == ["g1-l2-b2", "fine-g1-l2-b2"]
    assert g.points[1].train == (("mode", "finetune"),)
    assert g.train == (("epochs", 1),)


def test_refusal_lists_every_reason():
    g = grid(
        '[sweep]\nname = "t"\nmodel = "vgg16"\n[train]\nglobal_batch_size = 3\nimage_sise = 32\n'
        + '[[series]]\nname = "x"\npoints = [[2, 3, 8], [1, 4]]\n'
    )
    problems = grid_problems(
        g, local_capacity=1, capacity_source="(GPUs)", trainer_flags={"image_size", "epochs"}
    )
    text = "\n".join(problems)
    assert "unknown model 'vgg16'" in text
    assert "GBS 8 is not divisible by LBS 3 x 2 GPUs" in text
    assert "needs 2 processes but this machine allows 1 (GPUs)" in text
    assert "'global_batch_size' is set by the sweep runner" in text
    assert "'image_sise' is not a `trainer train` option" in text
    assert len(problems) == 5
    assert grid_problems(g, slurm=True, trainer_flags=None)  # still refused on SLURM (model...)


def test_synthetic_set_too_small_for_a_global_batch_is_refused():
    g = grid(
        HEAD + "[train]\nsynthetic_size = 20\n[[series]]\nname = 'w'\nscaling = 'weak'\n"
        "gpus = [1, 2, 4]\ngbs = 16\n"
    )  # weak: 5, 10 and 20 samples, 5 per GPU; LBS 16, 8 and 4
    assert grid_problems(g, local_capacity=4) == [
        "point g1-l16-b16-f0.25 (series w): its 5 training samples hold no global batch of 16 "
        "(1 GPUs x 16 samples each); raise synthetic_size or lower the GBS",
        "point g2-l8-b16-f0.5 (series w): its 10 training samples hold no global batch of 16 "
        "(2 GPUs x 8 samples each); raise synthetic_size or lower the GBS",
    ]
    big = grid(
        HEAD + "[train]\nsynthetic_size = 16\n[[series]]\nname = 's'\ngpus = [1, 4]\ngbs = 16\n"
    )
    assert grid_problems(big, local_capacity=4) == []


def test_slurm_points_must_fill_whole_nodes():
    g = grid(
        HEAD + '[slurm]\ngpus_per_node = 4\n[[series]]\nname = "x"\ngpus = [2, 4, 6, 8]\nlbs = 1\n'
    )
    assert grid_problems(g, slurm=True) == [
        "point g6-l1-b6 (series x): 6 GPUs do not fill whole nodes of 4 GPUs"
    ]
    assert grid_problems(g, local_capacity=8) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sweep\nname=1", "invalid TOML"),
        ('[sweep]\nname = "t"\nmodel = "resnet50"\n', "at least one [[series]]"),
        ('[sweep]\nmodel = "resnet50"\n[[series]]\nname="x"\ngpus=[1]\nlbs=1\n', "needs name"),
        (HEAD + "[[series]]\nname = 'x'\ngpu = [1]\n", "unknown key(s) in [[series]] #1: gpu"),
        (HEAD + "[[series]]\nname = 'x'\ngpus = [0]\nlbs = 1\n", "gpus must be a positive integer"),
        (HEAD + "[[series]]\nname = 'x'\ngpus = [1]\n", "needs gbs and/or lbs"),
        (HEAD + "[[series]]\nname = 'x'\npoints = [[1]]\n", "each point must be [gpus, lbs]"),
        (HEAD + "[[series]]\nname = 'x'\nscaling = 'wide'\ngpus=[1]\nlbs=1\n", "scaling must be"),
        (
            HEAD + "[[series]]\nname='x'\ngpus=[1]\nlbs=1\n[[series]]\nname='x'\ngpus=[2]\nlbs=1\n",
            "repeated: x",
        ),
        (
            HEAD + "[slurm]\nnodes = 2\n[[series]]\nname='x'\ngpus=[1]\nlbs=1\n",
            "unknown key(s) in [slurm]",
        ),
        ('[sweep]\nname = "a b"\nmodel = "resnet50"\n', "may use only letters"),
        (
            HEAD.replace("repeats = 2", "repeats = 0") + "[[series]]\nname='x'\ngpus=[1]\nlbs=1\n",
            "repeats must be",
        ),
    ],
)
def test_bad_grid_files_get_clear_errors(tmp_path, text, message):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(GridError) as err:
        load_grid(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_grid_file(tmp_path):
    with pytest.raises(GridError, match="cannot read grid file"):
        load_grid(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "name", ["sweep_cpu_tiny.toml", "sweep_resnet50_study.toml", "sweep_fourcastnet_study.toml"]
)
def test_example_grids_parse_and_can_run_on_slurm(name):
    g = load_grid(EXAMPLES / name)
    assert g.points
    assert grid_problems(g, slurm=True) == []
