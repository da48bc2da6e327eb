"""benchmarks/reference.py: argument defaults per family, the kinema side of each authors'-repository
comparison against the authors' constructor arguments, and one tiny VDM round against video-diffusion-pytorch
when it is installed.

The authors' checkouts are found through environment variables (the tests skip without them):
``KINEMA_OFFICIAL_VIDEOGPT`` (wilson1yan/VideoGPT), ``KINEMA_OFFICIAL_STYLEGAN_V`` (universome/stylegan-v) and
``KINEMA_OFFICIAL_STYLEGAN_V_PYTHON`` (a Python with omegaconf 2.0.6); ``KINEMA_OFFICIAL_TGAN_ODE``
(Zasder3/Latent-Neural-Differential-Equations-for-Video-Generation) for the TGANv2 port and TGAN-ODE;
``KINEMA_OFFICIAL_DVG`` (shgaurav1/DVG) and ``KINEMA_OFFICIAL_DVG_PYTHON`` (a Python with gpytorch 0.3.6)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("reference_bench", ROOT / "benchmarks" / "reference.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_family_defaults_and_overrides():
    args = bench.parse_args(["--family", "vdm", "--set", "train.log_every=5"])
    assert args.config == "vdm_cpu16" and args.batch == 8 and args.sample_steps == 32 and args.threads == 1
    # the family's matching overrides first, the user's after them, the sampler's steps last
    assert args.set[: len(bench.FAMILIES["vdm"]["set"])] == bench.FAMILIES["vdm"]["set"]
    assert args.set[-2:] == ["train.log_every=5", "model.sampling_steps=32"]
    nuwa = bench.parse_args(["--family", "nuwa", "--batch", "4"])
    assert nuwa.config == "nuwa_cpu16" and nuwa.batch == 4 and nuwa.sample_steps == 0
    assert not any(s.startswith("model.sampling_steps") for s in nuwa.set)
    with pytest.raises(SystemExit):
        bench.parse_args(["--family", "vqgan"])
    vg = bench.parse_args(["--family", "videogpt", "--official", "/nonexistent"])
    assert vg.config == "videogpt_prior_cpu16" and vg.batch == 8 and vg.sample_batch == 4
    assert not bench.reference_available("videogpt", vg.official)  # a checkout is needed, not a package
    assert not bench.reference_available("videogpt", None)
    sgv = bench.parse_args(["--family", "stylegan_v"])
    assert sgv.config == "stylegan_v_cpu16" and sgv.batch == 16 and "model.dt_embed_dim=256" in sgv.set


def test_tgan_families_match_the_port_and_the_script():
    """tganv2: train_speed's half-width network against the port's constructor arguments (PORT_G / PORT_D);
    tgan_ode: the script's batch 32 and RMSprop 5e-5, kinema's "lin" ODE generator. A checkout is needed."""
    from kinema.registry import load_config

    tv2 = bench.parse_args(["--family", "tganv2", "--official", "/nonexistent"])
    assert tv2.config == "tganv2_ucf101_192" and tv2.batch == 2 and tv2.sample_batch == 2
    assert tv2.set[:2] == bench.HALF_WIDTH and bench.FAMILIES["tganv2"]["reference"]["gen"] == bench.PORT_G
    assert not bench.reference_available("tganv2", tv2.official)
    m = load_config(tv2.config, tv2.set).model
    assert list(m.gen_channels) == [512, 256, 128, 64, 32, 16, 16] and m.resolution == 192 and m.frames == 16
    ode = bench.parse_args(["--family", "tgan_ode"])
    cfg = load_config(ode.config, ode.set)
    assert ode.batch == 32 and cfg.train.optimizer == "rmsprop" and cfg.train.lr == 5e-5
    assert (cfg.model.temporal, cfg.model.z_dim, cfg.model.resolution, cfg.model.frames) == ("ode", 100, 64, 16)
    assert cfg.objective.clip_every == 5


def test_alternate_swaps_the_order_every_round():
    calls = []
    fns = {name: (lambda name=name: calls.append(name) or 1.0) for name in ("a", "b", "c")}
    rounds = bench.alternate(fns, 2)
    assert calls == ["a", "b", "c", "c", "b", "a"] and rounds == [{"a": 1.0, "b": 1.0, "c": 1.0}] * 2


def test_peak_rss_is_this_process_own():
    """A child started by a larger process reports its own peak, not the parent's (ru_maxrss would)."""
    big = bytearray(300 * 2**20)
    big[::4096] = b"\x01" * len(big[::4096])
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); from train_speed import peak_rss; "
            "print(peak_rss())")
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < 250 * 2**20
    del big


def test_matched_videogpt_configuration():
    """kinema's prior config has the widths the authors' VideoGPT(args) gets (FAMILIES['videogpt'])."""
    from kinema.registry import load_config

    ref = bench.FAMILIES["videogpt"]["reference"]
    m = load_config("videogpt_prior_cpu16", bench.parse_args(["--family", "videogpt"]).set).model
    p, vq = ref["prior"], ref["vqvae"]
    assert (m.hidden, m.heads, m.layers, m.dropout, m.attn_dropout) == (
        p["hidden_dim"], p["heads"], p["layers"], p["dropout"], p["attn_dropout"])
    assert m.attention == p["attn_type"] and m.cond_frames == 0 and m.num_classes == 0
    assert (m.frames, m.resolution, list(m.downsample), m.codebook_size) == (
        vq["sequence_length"], vq["resolution"], vq["downsample"], vq["n_codes"])
    vq_cfg = load_config("videogpt_vqvae_cpu16").model  # the config whose widths the authors' VQ-VAE gets
    assert (vq_cfg.hidden, vq_cfg.codebook_size, vq_cfg.embedding_dim, vq_cfg.res_layers) == (
        vq["n_hiddens"], vq["n_codes"], vq["embedding_dim"], vq["n_res_layers"])


def test_matched_stylegan_v_configuration():
    """kinema's config has the sizes the authors' networks are composed with (FAMILIES['stylegan_v'])."""
    from kinema.registry import load_config

    ref = bench.FAMILIES["stylegan_v"]["reference"]
    m = load_config("stylegan_v_cpu16", bench.parse_args(["--family", "stylegan_v"]).set).model
    assert m.resolution == ref["resolution"] and m.channel_base == ref["fmaps"] * 32768
    assert (m.channel_max, m.z_dim, m.w_dim, m.motion_z_dim, m.motion_u_dim, m.motion_kernel) == (
        ref["channel_max"], ref["z_dim"], ref["w_dim"], ref["motion_z_dim"], ref["motion_v_dim"], ref["kernel_size"])
    assert (m.time_enc_dim, m.min_period_len, m.max_period_len, m.max_num_frames) == (
        ref["time_enc_dim"], ref["min_period_len"], ref["max_period_len"], ref["max_num_frames"])
    assert m.motion_z_distance == ref["min_period_len"]  # the authors' ${model.generator.time_enc.min_period_len}
    assert (m.concat_res, m.mbstd_group_size, m.mapping_layers) == (
        ref["concat_res"], ref["mbstd_group_size"], ref["map_layers"])
    assert m.dt_embed_dim == 256 and m.conv_clamp == 0 and m.augment_p == 0 and m.augment_target == 0


def _checkout(family: str) -> Path:
    path = os.environ.get(f"KINEMA_OFFICIAL_{family.upper()}")
    if not path or not Path(path).is_dir():
        pytest.skip(f"no checkout of the authors' {family} repository (set KINEMA_OFFICIAL_{family.upper()})")
    return Path(path)


def test_authors_videogpt_matches_kinema_parameter_count(tmp_path):
    """The authors' VideoGPT built by the benchmark has kinema's trained parameter count, exactly."""
    import torch

    official = _checkout("videogpt")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reference_authors

    from kinema.registry import build_model, load_config

    ref = bench.FAMILIES["videogpt"]["reference"]
    sets = reference_authors.prepare_videogpt(official, ref, tmp_path)
    x = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    _, step, _, params = reference_authors.build_videogpt(official, ref, tmp_path, x)
    step()
    model = build_model(load_config("videogpt_prior_cpu16", bench.parse_args(["--family", "videogpt"]).set + sets).model)
    assert params == model.parameter_counts()["transformer (trained)"]


def test_authors_stylegan_v_matches_kinema_parameter_counts():
    """The authors' G and D built by the benchmark (in the Python with their omegaconf pin) have kinema's
    parameter counts, exactly."""
    official = _checkout("stylegan_v")
    python = os.environ.get("KINEMA_OFFICIAL_STYLEGAN_V_PYTHON", sys.executable)
    code = ("import sys, json, torch; from pathlib import Path; "
            f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import reference, reference_authors; "
            "ref = reference.FAMILIES['stylegan_v']['reference']; "
            f"out = reference_authors.build_stylegan_v(Path({str(official)!r}), ref, Path('.'), "
            "torch.rand(2, 3, 16, 32, 32) * 2 - 1); print(json.dumps(out[3]))")
    got = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if got.returncode and "omegaconf" in got.stderr:
        pytest.skip("omegaconf 2.0.6 is not installed for the authors' code (KINEMA_OFFICIAL_STYLEGAN_V_PYTHON)")
    assert got.returncode == 0, got.stderr[-2000:]
    params = json.loads(got.stdout.strip().splitlines()[-1])
    from kinema.registry import build_model, load_config

    counts = build_model(load_config("stylegan_v_cpu16", bench.parse_args(["--family", "stylegan_v"]).set).model
                         ).parameter_counts()
    assert params == {"G": counts["generator"], "D": counts["discriminator"]}


def test_matched_vdm_configuration_builds():
    """The kinema side of the VDM comparison is a valid config with attention at every level."""
    from kinema.registry import build_model, load_config

    args = bench.parse_args(["--family", "vdm"])
    cfg = load_config(args.config, args.set)
    assert cfg.model.attention_resolutions == [16, 8] and cfg.model.parameterization == "eps"
    assert cfg.objective.joint_image_frames == 0
    assert 150_000 < build_model(cfg.model).parameter_counts()["total"] < 250_000


@pytest.mark.skipif(importlib.util.find_spec("video_diffusion_pytorch") is None,
                    reason="video-diffusion-pytorch is not installed (pip install --no-deps video-diffusion-pytorch)")
def test_one_tiny_vdm_round(tmp_path):
    out = tmp_path / "ref.json"
    record = bench.main(["--family", "vdm", "--rounds", "1", "--warmup", "0", "--sample-rounds", "1",
                         "--sample-warmup", "0", "--sample-steps", "2", "--batch", "2", "--sample-batch", "1",
                         "--out", str(out)])
    assert json.loads(out.read_text())["family"] == "vdm"
    assert 0.95 < record["parameter_ratio"] < 1.05  # the matched architectures
    for key in ("train_kinema_cli_s", "train_kinema_bare_s", "train_reference_s", "sample_kinema_s_per_video",
                "sample_reference_s_per_video"):
        assert len(record[key]) == 1 and record[key][0] > 0
    rss = record["peak_rss_bytes"]
    assert all(rss[phase][who] > 0 for phase in ("train", "sample") for who in ("kinema", "reference"))


def test_authors_tgan_ode_matches_kinema_parameter_counts():
    """The TGAN-ODE authors' 64x64 "lin" TGAN-ODE built by the benchmark has kinema's G and D parameter counts
    (construction only; the step is not run: 20+ s at the script's batch 32)."""
    import torch

    official = _checkout("tgan_ode")
    pytest.importorskip("torchdiffeq")
    pytest.importorskip("torchsde")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reference_authors

    from kinema.registry import build_model, load_config

    _, _, _, params = reference_authors.build_tgan_ode(official, bench.FAMILIES["tgan_ode"]["reference"], Path("."),
                                                       torch.zeros(32, 3, 16, 64, 64))
    counts = build_model(load_config("tgan_ode", bench.parse_args(["--family", "tgan_ode"]).set).model
                         ).parameter_counts()
    assert params == {"G": counts["generator"], "D": counts["discriminator"]}


def test_profile_reference_kinema_side_runs(capsys):
    """benchmarks/profile_reference.py profiles kinema's bare step at a family's benchmark configuration
    (VDM: one step at batch 8, ~1 s) and prints the op table and the table by input shape."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import profile_reference

    profile_reference.main(["--family", "vdm", "--side", "kinema", "--steps", "1", "--rows", "5"])
    out = capsys.readouterr().out
    assert out.count("Self CPU time total") == 2 and "Input Shapes" in out and "convolution" in out


def test_matched_dvg_configuration():
    """dvg: kinema's dvg_kth_64 at the sizes the authors' train.py builds (g_dim 90, nf 64, LSTM 2 x 256, 40
    inducing points, 5 + 10 frames, 64x64 grey), Adam 2e-3 with beta1 0.9, on synthetic clips; the sampling
    batch is the training batch (the authors' LSTM holds one batch size) and the rollout generate_frames.py's."""
    from kinema.registry import load_config

    args = bench.parse_args(["--family", "dvg", "--official", "/nonexistent"])
    assert args.config == "dvg_kth_64" and args.batch == args.sample_batch == 8 and args.rounds == 6
    assert not bench.reference_available("dvg", args.official)
    cfg = load_config(args.config, args.set)
    m, ref = cfg.model, bench.FAMILIES["dvg"]["reference"]
    assert (m.g_dim, m.nf, m.rnn_size, m.rnn_layers, m.gp_inducing, m.channels, m.n_past, m.n_future, m.resolution) \
        == (ref["g_dim"], ref["nf"], ref["rnn_size"], ref["layers"], ref["inducing"], ref["channels"], ref["n_past"],
            ref["n_future"], 64)
    assert cfg.objective.finetune and (cfg.train.optimizer, cfg.train.lr, cfg.train.betas[0]) == ("adam", 2e-3, 0.9)
    assert cfg.data.source == "synthetic" and cfg.data.workers == 0
    assert ref["n_eval"] == 105 and ref["trigger_every"] == 15  # generate_frames.py:47, :166


def test_authors_dvg_matches_kinema_parameter_count():
    """The authors' DVG built by the benchmark (in the Python with gpytorch 0.3.6) has kinema's parameter count,
    exactly, and steps and samples at a small batch through the view shim."""
    official = _checkout("dvg")
    python = os.environ.get("KINEMA_OFFICIAL_DVG_PYTHON", sys.executable)
    code = ("import sys, json, torch; from pathlib import Path; "
            f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import reference, reference_authors; "
            "ref = dict(reference.FAMILIES['dvg']['reference'], n_eval=7); "
            f"out = reference_authors.build_dvg(Path({str(official)!r}), ref, Path('.'), "
            "torch.rand(2, 3, 15, 64, 64) * 2 - 1); out[1](); v = out[2](2); assert v.shape == (7, 2, 1, 64, 64); "
            "print(json.dumps(out[3]))")
    got = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if got.returncode and "gpytorch" in got.stderr:
        pytest.skip("gpytorch 0.3.6 is not installed for the authors' code (KINEMA_OFFICIAL_DVG_PYTHON)")
    assert got.returncode == 0, got.stderr[-2000:]
    params = json.loads(got.stdout.strip().splitlines()[-1])
    from kinema.registry import build_model, load_config

    model = build_model(load_config("dvg_kth_64", bench.parse_args(["--family", "dvg"]).set).model)
    assert params == model.parameter_counts()["total"]
