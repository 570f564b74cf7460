"""Stitch bench/results/*.md into docs/BENCHMARKS.md, each table under its question, with the paper's
published numbers beside ours where the rows match.  python bench/render.py"""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path("bench/results")
SECTIONS = [
    ("quality", "Perplexity by T and neuron family (paper Tables 1, 5, 6, 7, 12)",
     "SmolLM2-135M, all 301 sites spiked, the default recipe (online Hadamard at down_proj, prefixed outlier "
     "token, outlier tokens left after it kept out of the calibration, per-channel tau, tau headroom `auto`: "
     "1.5 at T >= 8, none at T = 6), one shared calibration of 16,384 tokens; perplexity over 4,096 held-out "
     "enwiki-excerpt tokens in 512-token windows (`vs ANN` is the relative increase; the 20k-token ablation "
     "below is the finer measurement of the default). The paper's rows are LLaMA-2-7B / LLaMA-3-8B on "
     "WikiText2 (ANN 5.47 / 6.14): T=8 grain 2 6.71 (+23%) / 6.32 (+3%); T=10 grain 2 5.50 (+0.5%) on "
     "LLaMA-2-7B; T=6 grain 2 - / 8.04 (+31%); T=6 grain 3 10.79 (+97%) on LLaMA-2-7B. Different models and "
     "text: compare the relative increases, not the perplexities. The `fit s` column is not a speed "
     "measurement (other jobs shared the 2 cores); see the fitting throughput table. Every fitted row uses the "
     "default joint fitting (theta, h and B updated together) except `alternating (Alg. 1)`, the paper's "
     "recipe (`--alternating`); the joint rows against it are why joint fitting is the default (the paper's "
     "Table 6 found the opposite). Grain differences at T = 8 and 10 smaller than the fitting-seed spread "
     "(seed table below) do not rank the grain counts."),
    ("ablation", "Outlier handling, one feature at a time",
     "SmolLM2-135M, multi-grain 2, all 301 sites, 20,480 held-out enwiki-excerpt tokens. `all off`: no "
     "rotation, no prefix, per-tensor tau = max, no layer-wise calibration; each `+` row switches one feature "
     "on; `all on, no layer-wise` is the default recipe (rotation, prefix, per-channel tau, tau headroom "
     "`auto`: 1.5 at T >= 8, none at T = 6, and the outlier tokens left after the prefix kept out of the "
     "calibration). `prefix` lists the prefix token ids the conversion chose. The ANN row is the plain base "
     "model (no prefix). Tau headroom only pays with per-channel tau: on per-tensor tau (`+ tau headroom`) "
     "the outlier channels already set a huge tau and the extra range costs resolution everywhere. `all on "
     "but outlier tokens kept` calibrates on every token: windows that start with the prefix token again "
     "carry massive activations and set those layers' taus. Layer-wise calibration is off by default: compare "
     "its rows with the default at each T. The layer-wise rows (2026-12-03) are the guarded stage: a block's change and the whole stage are kept only if they lower the error on 8 calibration windows held out from the tuning, the stage by at least 0.005 nats of token loss. `all on` at T = 8 is 20.577, the per-site fit measured in the same code on the same day (the stage was undone); the `all off` and default rows are older (2026-11-24), so `+ layer-wise` at T = 8 (29.63 vs 29.15) is not a same-run comparison. Every row is fitted jointly (the default). Target: within 2% at "
     "T = 8 and 8% at T = 6. The paper, all on: LLaMA-3-8B +3% (T = 8), +31% (T = 6); LLaMA-2-7B +23%, +123%."),
    ("calibration_spread", "How much the calibration draw moves perplexity at T = 8",
     "SmolLM2-135M, default recipe at T = 8: three calibration seeds (which activations the reservoirs keep; "
     "the text, prefix and taus are the same) times three fitting seeds, each fit evaluated on 20,480 held-out "
     "enwiki-excerpt and 8,192 held-out Botchan tokens against the plain ANN (20.505 / 49.37) and the analog "
     "reference (same prefix and rotation, sites analog: 20.41 / 48.88), and on enwiki once more with the "
     "attention mass correction (an evaluation-time switch, the same neurons). Each calibration row is the "
     "mean of its three fits (`std`: over the fits, of `vs ANN`); `all` is the mean of the nine runs. The draw "
     "moves the T = 8 perplexity more than the fitting seed does (0.22 against 0.12 points), so one "
     "calibration with three fitting seeds (as in the fewer-timesteps table, whose T = 8 row of 2026-12-03 "
     "read +0.28%) is not enough to read a 0.5% target on: over the nine runs the current code is +0.47% "
     "against the plain ANN (single runs from +0.17% to +0.80%) and +0.96% against the analog reference on "
     "enwiki; on Botchan -0.79% and +0.21%. Calibration seed 0, the one every other table uses, is the "
     "worst of the three. The mass correction lowers the mean little (+0.45%) but narrows the runs (+0.36% "
     "to +0.59%). Before these rows, the calibration code of 2026-12-05 (faster sampling, same law) was "
     "checked against the one before it: the same taus to 2.5e-5, per-site sample distributions as close as "
     "two independent draws (mean Kolmogorov-Smirnov distance 0.008 for both), and its T = 8 results within "
     "this spread. A stratified draw (a 4x reservoir thinned to one sample per quantile slice; calibration "
     "seeds 0-2, fitting seed 0: +0.20 / +0.42 / +0.23% against +0.48 / -0.11 / +0.21% for a plain 16k "
     "subsample of the same reservoirs) did not lower the error and was not kept."),
    ("seed_spread", "How much the fitting seed moves perplexity at T = 6 and 8",
     "SmolLM2-135M, default recipe, one shared calibration pass; only the fitting seed (the minibatches of "
     "the 240 Adam steps) changes between runs; the same 20,480 held-out tokens as the ablation (`vs ANN` "
     "and its spread as fractions), for the joint default and the paper's alternating Alg. 1. Per-run "
     "numbers (perplexity, final fitting loss, seconds) are in `seed_spread.json`. The rows were measured on "
     "2026-11-23, when Alg. 1 was still the default; only their labels changed since (every fit here names "
     "its schedule and seed explicitly)."),
    ("accuracy", "Zero-shot multiple-choice accuracy through lm-eval",
     "`spiking_enwiki_cloze`: 200 questions built from held-out enwiki-excerpt articles (two sentences of "
     "context, the true next sentence among four; chance 25%), evaluated by lm-eval's own evaluator with "
     "`hf` and `spiking-hf` (default recipe, energy meter on). `acc stderr` is lm-eval's bootstrap standard "
     "error: compare differences with it. The `eval s` column is not a throughput measurement (the spiking "
     "runs include kernel compilation); see the lm-eval throughput table."),
    ("quality_tau_surrogate", "The same grid with the surrogate width in units of tau (superseded)",
     "Why the surrogate is now scaled per step: with one width for all steps, T = 8 fits had a larger sample "
     "error than with the per-step surrogate and came out worse than T = 6. Kept for the record; we have no "
     "explanation yet for that run's good tied row at T = 8."),
    ("energy", "Energy per 512-token sample (paper Tables 13-17 layout)",
     "SmolLM2-135M, default recipe, one 512-token held-out sample, read/write on; `mask` 2 is the early-spike "
     "mask of Appendix D.7 applied after fitting (every neuron but the softmax map's keeps its first 2 spikes); "
     "`ppl` is the perplexity of the same model over 4,096 held-out enwiki tokens. Each row is priced by our "
     "cost model (`ours`: causal attention pairs, neuron updates at 1.8 pJ per element-step, activation "
     "reads/writes only) and by the paper's (`paper`: eq. 18 for MAC & AC, eq. 59/60 for read/write and "
     "neuron energy, attention over the full L x S rectangle, weight reads at linear layers); docs/DESIGN.md, "
     "Energy, lists every difference. `vs ANN` compares totals under the same convention. `firing rate` is "
     "per real slot (masked attention entries are not neurons); `fan-out rate` weights each spike by the "
     "outputs it feeds, the rate the AC count sees. The paper (LLaMA-3-8B, T = 6): ANN 18.00 J MAC & AC + "
     "38.47 J read/write; spiking 10.44 J + 38.35 J (86.5% of the ANN), with the mask 6.08 J + 34.02 J (71.0%)."),
    ("energy_baseline", "The ANN baseline from a config alone (paper Tables 3 and 14)",
     "`spiking-lm energy --model <config> --convention ours|paper`: one causal 512-token sample through the "
     "ANN on the meta device (no weights), counted by the same wrappers and cost models as the runs above. "
     "The paper convention reproduces the published LLaMA-3-8B ANN row within 1% (the test suite checks it); "
     "ours counts causal attention pairs and no weight reads."),
    ("spike_budget", "The early-spike mask after the fit vs inside it",
     "SmolLM2-135M, default recipe, mask k = 2 (every neuron but the softmax map's keeps its first 2 spikes). "
     "`post-hoc` is the paper's: neurons fitted without the mask, masked at run time; `in fit` fits them with "
     "the cap inside their dynamics (`--spike-mask 2 --mask-in-fit`), so the thresholds learn that only k "
     "spikes come. Perplexity over 4,096 held-out enwiki tokens; ACs of one 512-token sample. The paper "
     "(LLaMA-3-8B, T = 6, grain 2, post-hoc): MAC & AC energy 10.44 -> 6.08 J (-42%), WikiText2 perplexity "
     "8.04 -> 8.82 (+9.7%; Tables 1, 14 and 16)."),
    ("spike_pareto", "Perplexity vs energy: the spike penalty (energy-aware fit)",
     "SmolLM2-135M, default recipe at one T, fitted with `--spike-penalty LAMBDA` (each site's coding error "
     "plus lambda x its firing rate weighted by the outputs each spike feeds); `lambda 0` and the mask rows "
     "come from the table above. Perplexity over 4,096 held-out enwiki tokens, ACs and energy (ours) of one "
     "512-token sample. The curve: `bench/results/spike_pareto.png`."),
    ("spike_pareto_t8", "Perplexity vs energy at T = 8: the spike penalty against the paper's mask saving",
     "As above at T = 8, plus `mask + penalty` (the k = 2 mask inside the fit and a penalty). The target: at "
     "the paper's mask saving (AC -42%), a perplexity cost at most a third of the post-hoc mask's. Against "
     "the unmasked T = 8 model (12.37 ppl, 212.7 G AC), the post-hoc mask saves 34.0% of the ACs at +139% "
     "perplexity; compare each row's AC and ppl with those. The curve: `bench/results/spike_pareto_t8.png`."),
    ("weight_bits", "Low-bit weights (paper Table 8)",
     "SmolLM2-135M, decoder linears quantized by torchao (`IntxWeightOnlyConfig`, symmetric: "
     "W8 one scale per output row from its maximum, W4 one per 32 inputs chosen by HQQ's scale search) after the rotation and before calibration. `ANN` is "
     "the base model with those weights and no rotation or prefix (what a user compares with; `spiking=none,"
     "weight_bits=N`); `analog reference` adds the prefix and rotation, then quantizes, sites analog. "
     "Perplexity over 20,480 held-out enwiki tokens; accuracy on the first 40 cloze questions (through "
     "`spiking-hf`, the recipe re-applied from the checkpoint); energy of one 512-token sample in the paper's "
     "convention with read/write (eq. 59/60), weights read at their width. Targets: T = 8 within 1% of the "
     "ANN at W8, within 3% at W4. The paper (LLaMA-2-7B, T = 8, WikiText2; fp16 ANN 5.47): W8 7.56 / 7.25, "
     "W4 8.91 / 8.41 at grains 2 / 3 (+38% / +63% over the fp16 ANN at grain 2). The W16 and W8 rows are "
     "the previous full run's (`--keep-other-bits` reran W4 only, after its scales moved to HQQ)."),
    ("fewer_timesteps", "Fewer timesteps: a uniform T against a T per site type",
     "SmolLM2-135M, default recipe, one shared calibration. `uniform`: every site at T; `per-site T`: the site "
     "types the selection below chose get T + 2 steps (`SpikingConfig(site_timesteps=...)`, "
     "`--site-timesteps`), every other site keeps T. Perplexity over 20,480 held-out enwiki-excerpt tokens "
     "and 8,192 held-out Botchan tokens (another domain; the calibration is enwiki only), against the plain ANN "
     "(no prefix, what a user compares with) and the analog reference (same prefix and rotation, sites analog); "
     "`seed std` is the standard deviation of `vs ANN` over the fitting seeds. AC and energy (our convention, "
     "mJ per token) of one 512-token enwiki sample, fused. Targets: T = 6 within 3%, T = 5 within 8%, T = 4 "
     "within 20%, T = 8 within 0.5% of the ANN. The paper: LLaMA-3-8B at T = 6 +31% (its reference code's "
     "README: about +24%); nobody publishes T = 4 or 5 for a spiking LLaMA. Per-run numbers are in "
     "`fewer_timesteps.json`. These rows (2026-12-03) vary the fitting seed on one calibration draw; the "
     "calibration-draw table above shows that the draw moves T = 8 by more than the fitting seed, and measures "
     "the current code's T = 8 over nine runs: +0.47% (enwiki, vs ANN). The softmax map at T + 4 instead of "
     "T + 2 lowers T = 5 and T = 4 further (tables below: +9.4% and +30.3% against the ANN)."),
    ("fewer_timesteps_sensitivity", "Which site types need the steps: the selection",
     "How the per-site T recipes above were chosen, on calibration-split windows only (never the held-out "
     "text, 16 windows of 512 tokens): at each T every candidate gets T + 2 steps, all other sites keep T "
     "(neurons fitted once per T, seed 0). A candidate is one site type, or the two factors of one product "
     "together (gate_act with up, q with k): bumped alone, one factor's finer code meets the other's coarser "
     "one and its measured gain is mostly noise. `gain`: the relative perplexity drop on the selection windows; `AC added`: relative to the "
     "uniform T model on the 512-token sample. Candidates are taken greedily by gain per AC added while the total "
     "AC stays within 5% of the uniform model's. Differences below about 0.5% are within the selection's noise."),
    ("step_ladder", "More steps where they are free, and a smaller code range",
     "On the selection windows (calibration split, 16 windows of 512 tokens, never the held-out text), "
     "fitting seed 0, starting from the selection's per-site T recipes above: the groups whose first bump "
     "added almost no ACs get two more steps (T = 5: selection perplexity 25.14 -> 24.68; T = 4: 29.82 -> 28.94) (`softmax + 2 more`: the softmax map at T + 4; then gate_act and "
     "up too), and at T = 4 every neuron's code range is shrunk to s x tau (`code range`: d_t = s B^-t, values "
     "above s tau saturate; the robust-tau lever as one global factor). The softmax map's extra steps cost "
     "about 0.3% more ACs (its spikes meet V's in P V, but a finer map spikes little more) and lower the "
     "selection perplexity; two more steps beyond that, or the gate product's factors at T + 4, change it by "
     "less than the selection's noise (about 0.5%). A smaller code range is worse at both scales tried (the "
     "fit's own loss rises too): the calibration maximum stays the better range at T = 4. The held-out "
     "evaluation of the softmax's extra steps is the next table."),
    ("fewer_timesteps_softmax", "Fewer timesteps: the softmax map at T + 4",
     "Held-out evaluation, as in the fewer-timesteps table above (20,480 enwiki and 8,192 Botchan tokens, "
     "three fitting seeds on one calibration, against the plain ANN and the analog reference), of the "
     "selection's per-site T recipe (`(1)`, re-measured on today's code) and the same recipe with the softmax "
     "map at T + 4 (`(2)`, from the table above); no mass-corrected rows. The softmax's two extra steps lower "
     "T = 5 from +10.4% to +9.4% and T = 4 from +32.7% to +30.3% against the ANN (seed std 0.1-0.7 points; "
     "Botchan likewise), for 0.3% more ACs. Targets (T = 5 within 8%, T = 4 within 20%) are still not met."),
    ("fewer_timesteps_t8_softmax", "T = 8 with the softmax map at 10 steps",
     "The same held-out evaluation at T = 8 (calibration seed 0, fitting seeds 0-2, no mass correction): "
     "uniform T = 8 against the softmax map at 10 steps, for 0.15% more ACs. The softmax's steps lower the "
     "mean from +0.66% to +0.47% against the ANN (+1.15% to +0.96% against the analog reference; Botchan "
     "+0.28% to -0.02% against the analog reference), a difference about the size of the fitting seed's "
     "standard deviation (0.16 points) on one calibration draw, which moves T = 8 more than the seed does "
     "(calibration-draw table). Not enough evidence to change the default recipe; the 0.5% target against "
     "the analog reference is not met either way."),
    ("fewer_timesteps_rope_pairs", "Fewer timesteps with one tau per RoPE pair",
     "The softmax-at-T+4 recipes of the table above, re-run with one tau per RoPE pair at q and k (now the "
     "default; held-out evaluation as above: 20,480 enwiki and 8,192 Botchan tokens, three fitting seeds on "
     "one calibration), each fit also with the attention mass correction (now the default too). In 512-token "
     "windows the pairing is neutral at T = 5 (+9.9% against +9.4%, within 0.3 points of seed std) and a "
     "little better at T = 4 (+28.7% against +30.3%); the mass correction lowers T = 5 to +9.3% and is "
     "neutral at T = 4. Targets (T = 5 within 8%, T = 4 within 20%) are still not met."),
    ("fewer_timesteps_bias", "Fewer timesteps: bias correction",
     "The same held-out evaluation (20,480 enwiki and 8,192 Botchan tokens, fitting seeds 0-2 on one calibration, "
     "against the plain ANN and the analog reference) of the best per-site T recipes so far, each fit evaluated "
     "without and with the bias correction (`SpikingConfig(bias_correction=True)`, docs/DESIGN.md, \"Bias "
     "correction\": every linear-feeding site gives its mean coding error per channel back as a bias, measured on "
     "8 calibration windows in network order). At T = 4 it lowers the mean from +30.3% to +27.8% against the ANN "
     "(+30.9% to +28.4% against the analog reference; Botchan +20.1% to +17.7%), every seed by 1.7-3.1 points, "
     "at the same AC count (the bias adds are one per output and token). At T = 5 the change (+9.4% to +9.3%, "
     "Botchan +4.0% to +3.7%) is within the seed spread. The correction costs one fused forward over 4,096 "
     "calibration tokens at conversion. Off by default (the default T is 8); the targets (T = 5 within 8%, T = 4 within 20%) are still not met."),
    ("fewer_timesteps_bias_mass", "Fewer timesteps: bias and mass correction together at T = 4",
     "The same held-out evaluation at T = 4 (fitting seeds 0-2, one calibration) of every combination of the two "
     "corrections that change no neuron: the attention mass correction alone moves the mean by less than the "
     "seed spread (+30.3% to +30.1% against the ANN), the bias correction takes it to +27.8%, both together to "
     "+27.1% (+27.7% against the analog reference; Botchan +20.1% to +16.6%). The best combination measured at "
     "T = 4; the 20% target is not met."),
    ("fewer_timesteps_t8_bias", "T = 8 with the bias correction",
     "The same held-out evaluation at the default T = 8 (uniform, fitting seeds 0-2, one calibration, no mass "
     "correction), each fit without and with the bias correction: +0.66% to +0.59% against the ANN (+1.15% to "
     "+1.08% against the analog reference; Botchan against the analog reference +0.28% to +0.29%), within the "
     "seed standard deviation (0.13-0.16 points). The default recipe keeps it off; T = 8 within 0.5% of the "
     "analog reference is not met."),
    ("fewer_timesteps_output_aware", "Fewer timesteps: output-aware samples",
     "The same held-out evaluation (20,480 enwiki and 8,192 Botchan tokens, fitting seeds 0-2 on one calibration, "
     "against the plain ANN and the analog reference, the attention mass correction on) of the best per-site T "
     "recipes, fitted on uniform samples (the paper's objective) and on output-aware samples "
     "(`SpikingConfig(sample_weighting=alpha)`, docs/DESIGN.md, \"Output-aware samples\": a per-channel site's "
     "fitting samples drawn with probability (tau_c^2 g_c)^alpha, g_c the squared weight column or the other "
     "factor's mean square the channel's error meets). At T = 4 they lower the mean from +29.1% to +27.3% "
     "against the ANN at alpha = 0.5 (+27.8% at 0.25; Botchan +18.9% to +18.1% / +17.7%), about two seed "
     "standard deviations; at T = 5 they are neutral (+9.34% against +9.35% / +9.51%). A control on a shorter "
     "screen (a one-off script, not kept: 8,192 enwiki tokens, T = 4, the same calibration) ruled out the "
     "draw itself: samples drawn with "
     "replacement at uniform weights were worse than the plain sample (+27.2% against +26.7% over the analog "
     "reference there), the weighted draws better (+25.0% to +25.2%). Energy per token moves by under 0.5%. "
     "Off by default: the T = 5, 6 and 8 rows (this and the next tables) give no held-out reason to change the recipe."),
    ("fewer_timesteps_output_aware_bias", "Fewer timesteps: output-aware samples with the bias correction at T = 4",
     "The output-aware fits of the table above at T = 4 (alpha 0.5, seeds 0-2, the mass correction on), each "
     "evaluated again with the bias correction. The two do not add up: on enwiki the mean stays at +27.3% "
     "against the ANN (the bias correction without them, on the code before the RoPE pairing, had taken "
     "+30.1% to +27.1%, table \"bias and mass correction together\"), on Botchan +18.1% -> +16.8% (there "
     "+16.6%). Both target the same "
     "per-channel error the uniform fit leaves where it matters most. The best T = 4 rows stay near +27%; "
     "the 20% target is not met."),
    ("fewer_timesteps_t6_output_aware", "T = 6 with output-aware samples",
     "The T = 6 per-site T recipe (held-out evaluation as above, seeds 0-2, one calibration, the mass correction "
     "on) fitted on uniform and on output-aware samples (alpha 0.5): +2.30% and +2.26% against the ANN (Botchan "
     "+0.27% / +0.24%), within the seed spread. Neutral, like T = 5 and 8."),
    ("fewer_timesteps_t8_output_aware", "T = 8 with output-aware samples",
     "The default T = 8 recipe (uniform, one tau per RoPE pair, the mass correction; fitting seeds 0-2, one "
     "calibration; held-out evaluation as above) fitted on uniform and on output-aware samples. The default "
     "reads +0.29% against the ANN and +0.78% against the analog reference on these 20,480 enwiki tokens "
     "(seed std 0.01 points), Botchan -0.84% / +0.16%; output-aware samples are neutral (+0.33% / +0.36% "
     "against the ANN at alpha 0.25 / 0.5; Botchan +0.07% / +0.05% against the analog reference). T = 8 within "
     "0.5% of the ANN is met; within 0.5% of the analog reference it is not."),
    ("fewer_timesteps_full_rotation", "Fewer timesteps with the residual stream rotated too",
     "The best per-site T recipes at T = 4, 5 and 6 (held-out evaluation as above: 20,480 enwiki and 8,192 "
     "Botchan tokens, fitting seeds 0-2 on one calibration, the mass correction on) converted with "
     "`rotation=\"full\"` (`--rotation full`, docs/DESIGN.md \"Outliers\": the RMSNorm weights folded into "
     "the linears they feed and the residual stream rotated by a Hadamard matrix, QuaRot-style; exact for the "
     "ANN, free at run time) instead of the default `online` (only the down_proj input rotated). The analog "
     "reference is the same function either way (20.40 / 48.88). Against the `online` rows of the tables above "
     "(same recipes, calibration and seeds): T = 4 +29.1% -> +25.0% against the ANN (Botchan +18.9% -> "
     "+17.4%), T = 5 +9.34% -> +8.13% (+3.7% -> +3.3%), T = 6 +2.30% -> +1.78% (+0.27% -> -0.13%), each "
     "larger than the seed spread. It is not free in energy: the rotated attention, MLP and head inputs have "
     "no quiet channels left (a per-channel tau had put the massive-activation channels' everyday values far "
     "below their tau, where they rarely spike), so the model makes 7-8% more ACs at every T (0.2116 -> 0.2274, "
     "0.2626 -> 0.2804, 0.3216 -> 0.3413 mJ/token). Measured against energy it is the dearer trade: one more "
     "step (online T = 4 -> 5, 5 -> 6) buys 0.82 and 0.31 points of perplexity per percent of energy, the "
     "rotation 0.55 at T = 4, 0.18 at T = 5 and 0.09 at T = 6; it helps where T itself is fixed. Not the default: `full` is refused for "
     "the post-norm families (docs/DESIGN.md, \"Architectures\"), and at T = 8 see the next table. The "
     "targets: T = 6 within 3% met either way; T = 5 within 8% missed by 0.13 points (seed std 0.47); T = 4 "
     "within 20% not met."),
    ("fewer_timesteps_t8_full_rotation", "T = 8 with the residual stream rotated too",
     "The default T = 8 recipe converted with `rotation=\"full\"` (held-out evaluation as above, one calibration, "
     "the mass correction on; fitting seed 0 only: the run was stopped for time). +0.32% against the ANN and "
     "+0.81% against the analog reference on enwiki, where the default `online` rotation reads +0.29% / +0.78% "
     "(mean of seeds 0-2, std 0.01 points, table \"T = 8 with output-aware samples\"); Botchan -0.99% / +0.00% "
     "against -0.84% / +0.16%; 5.5% more energy (0.4236 against 0.4016 mJ/token). Neutral at T = 8 on this "
     "one seed: the default keeps `online`, and T = 8 within 0.5% of the analog reference stays unmet."),
    ("fewer_timesteps_layerwise_t4", "The layer-wise stage at T = 4",
     "The T = 4 per-site T recipe (held-out evaluation as above, fitting seeds 0-2, one calibration, the mass "
     "correction on) without and with the layer-wise stage (`SpikingConfig(layerwise=LayerwiseConfig())`, "
     "docs/DESIGN.md, \"Layer-wise calibration\"), whose guard here still decided on the block decisions' own 8 "
     "windows of 256 tokens. It kept the stage for seeds 0 and 2 (0.025 nats lower loss on those windows each) "
     "and undid it for seed 1 (0.002 nats, under the 0.005 margin). Held-out: seed 0 +0.4% enwiki / +0.7% "
     "Botchan perplexity, seed 2 -0.7% / +2.1%; the mean +29.1% -> +28.9% against the ANN on enwiki, +18.9% "
     "-> +20.0% on Botchan. The stage tunes on calibration enwiki in 256-token windows and does not carry to "
     "512-token windows of held-out text, nor to another domain; it made held-out perplexity worse while its "
     "guard said better, so the guard now decides on `guard_windows` full-length calibration windows that "
     "neither the tuning nor the block decisions saw. Each stage took 10-12 minutes here (2 cores shared with "
     "another run). The T = 5 fits were not run (the run was stopped after T = 4)."),
    ("bases", "Do the bases learn? The fitted B by T",
     "The default fit (multi-grain, 2 grains, joint) on one calibration of 16,384 tokens, all 301 sites, at each T; "
     "`loss` is the fit's objective (the mean relative MSE of eq. 9 over the sites), `B` quantiles are over all "
     "sites' grains. Against it: the bases' learning rate x10 and x30 (an optimizer that held the bases back "
     "would end lower with more room), bases started at 1.7 and 2.4 instead of 2, and `free d_t loss`: after "
     "the default fit, every step's output weight set free and solved by least squares on the fit's own spikes "
     "(the most any choice of bases could give with those thresholds and resets). The bases do move, more the "
     "fewer the steps (median 2.00 at T = 8, 2.04 at T = 6, 2.12 at T = 5, 2.23 at T = 4, up to 2.5 at T = 4), "
     "and the default is the lowest loss at every T: a larger base learning rate ends higher (T = 8 at x30 does "
     "not move at all: the steps overshoot and each round keeps the start), and bases started away from 2 end "
     "higher without finding their way back within the schedule. Free output weights would lower the loss by "
     "only 6-10%. So the bases sit near their optimum for this code: B about 2 is what binary spikes with "
     "learned thresholds want, and the multi-granularity freedom has little left to give on SmolLM2."),
    ("fit_throughput", "Fitting throughput and neuron error on real SmolLM2 activations",
     "All 301 sites as one batched problem (16,384 samples each, 240 Adam steps of 4,096-sample minibatches). "
     "Target: the whole SmolLM2 fit under 60 s on 2 CPU cores. Paper: ~2 min per model on an A100. The "
     "joint fit costs more per step than the paper's alternating Alg. 1: every joint step runs the "
     "surrogate backward for all parameters, while Alg. 1's B steps need no surrogate and its theta/h steps "
     "no base gradient."),
    ("speed", "Conversion and execution speed (SmolLM2-135M, CPU)",
     "Ratios in one run. Targets: conversion <= 1.3x one plain ANN forward over the calibration tokens, the "
     "fit <= 25% of the conversion, fused forward <= 1.5x the ANN, timestep <= T x the ANN. The timestep "
     "execution runs every op on T spike frames (float32 steps for this float32 model; float64 ones for a "
     "float64 model, where it equals the fused execution to 1e-10): it is the faithful simulator, not a fast "
     "path; the fp32 rows show how far its logits are from the fused ones (a spike at a threshold flips "
     "and the flip propagates). Calibration includes the prefix search and runs every window after the "
     "prefix KV; the plain forward includes the lm_head, which calibration skips. The fit runs its "
     "surrogate steps as one compiled kernel per pass with the backward written out (docs/DESIGN.md, "
     "Fitting): 9.2 s here including about 5 s of compilation in a fresh process (18.8 s with autograd through "
     "the steps on 2026-12-05). Its gradients equal autograd's to rounding, so the fitted neurons differ from "
     "the stepwise fit's as another fitting seed would: on one calibration (default recipe, T = 8), 20,480 "
     "held-out enwiki tokens, fitting seeds 0-3, written-out +0.80 / +0.49 / +0.69 / +0.52% vs ANN, stepwise "
     "autograd +0.66 / +0.43 / +0.63 / +0.61% (means +0.62% and +0.58%), within the seed spread. "
     "Against the previous run of the same day (T = 8: fused 1.31x, metered 1.65x, timestep 8.17x), the site "
     "kernels now compile with Inductor's realization thresholds raised (`neurons/kernels.py`, "
     "`FUSION_OPTIONS`: the T unrolled steps stay one loop over memory instead of several loops with full-size "
     "buffers between them) and an unmetered fused forward runs a value-only kernel (no spike-count "
     "reduction): fused 1.17x, metered 1.25x, timestep 7.16x (within T; these rows predate the metered "
     "softmax's weighted count of the lm-eval table, which lowers the metered cost further). The outputs are bit-identical "
     "(the kernels' tests compare them). `conversion / plain forward` is 1.49 here (calibration 1.26x the "
     "plain forward, fit 16% of the conversion): the 1.3x target is not met. In the previous run the plain "
     "forward drifted to 53.9 s (36.6 s the run before, 39.4 s here), which made that run's 1.08 a drift "
     "artifact. The T = 6 and T = 10 timestep rows move by tens of percent between runs of one code on this "
     "machine (T = 10: 9.3x, 15.8x and now 10.1x); the metered timestep rows stay well above the unmetered "
     "ones (the T frames of every site are reduced for the counts)."),
    ("speed_conversion", "Conversion with the early-stopped prefix search",
     "The conversion rows of the speed table alone (`--conversion-only`), one run, after the prefix search "
     "stops a candidate's trial at the first layer whose outlier ratio already exceeds the best finished "
     "trial's (same choice as the exhaustive search; tested on real SmolLM2 layers). The search took 6.3 s "
     "before and 3.4 s after in two same-machine runs of 2,048-token calibrations; here 4.1 s of a 57.7 s "
     "calibration. The machine was slower than in the speed table's run (plain forward 47.3 s against 39.4 s): "
     "the ratio is what compares, 1.48x against 1.49x, so the 1.3x target is still not met. What is left "
     "beyond the forward: the reservoirs (about 9 s of the 16k-token calibration, measured by timing every "
     "`SiteReservoir.add`; half of it the per-channel max|x| reductions), the prefix search, and the fit's "
     "compilation in a fresh process (about 4 s of the fit). Keeping each batch's reservoir winners pending "
     "and merging every few batches measured no faster and was not kept."),
    ("speed_conversion_compile_once", "Conversion with the fit kernel compiled once",
     "The conversion rows again after the fit's first evaluation and its surrogate steps share one compiled "
     "variant of the fit kernel (it was compiled twice per conversion: about 0.6-0.9 s of the fit in a fresh "
     "process; tests/test_kernels.py counts the variants). The fit took 8.3 s here (15% of the conversion; 12.2 s "
     "and 17% in the run above), but the machine was faster throughout (plain forward 37.2 s against 47.3 s) and "
     "calibration measured relatively slower (1.28x the plain forward against 1.22x): conversion / plain forward "
     "1.50x, within this machine's run-to-run noise of the 1.48x above. The 1.3x target is not met."),
    ("speed_conversion_blocked", "Conversion with the blocked analog attention and sort-free reservoirs",
     "The conversion rows after two changes to the calibration forward (docs/DESIGN.md, Fitting): the analog "
     "softmax map runs a block of 128 queries at a time over the keys any row of the block may read (under the "
     "causal mask about half of the map is never computed; the softmax reservoirs take the values at positions "
     "they drew before the blocks ran), and the reservoirs follow bottom-k's law without a k-th value search "
     "(the k-th key followed by its Beta law). Measured on their own: one SmolLM2 layer's attention over a "
     "4 x 512 batch 51 ms -> 23 ms (in isolation), the reservoir work 3.0 s -> 2.3 s per 8,192 calibration "
     "tokens (cProfile). The converted model's `ann` mode runs the same blocked attention, so the plain "
     "reference here is the unconverted model's forward, timed just before and just after the conversion: it "
     "drifted from 42.2 s to 32.4 s within this one run, and the ratio uses their mean. Conversion / plain "
     "forward 1.44x (1.47-1.50x in the runs above): the 1.3x target is not met. Where the rest goes (one "
     "process, the variants timed in turn, medians of 5 rounds over 4,096 tokens; a profile, not a row): the "
     "recording forward with its reservoirs costs 1.01x the unconverted model's full forward (the analog "
     "backbone alone 0.85x, transformers' backbone alone 0.80x: the online transform and the site wrappers), "
     "then come the prefix search (about 0.1x) and the fit (about 0.25x, a third of it the fit kernel's "
     "compilation in a fresh process)."),
    ("speed_blocked", "Conversion and execution speed with the blocked analog attention",
     "The whole speed table on the code of the table above, with the unconverted model's forward bracketing the "
     "conversion as the plain reference (39.0 s before, 31.2 s after). Conversion / plain forward 1.27x, "
     "calibration 1.02x: under the 1.3x target in this run, 1.44x in the conversion-only run above on the same "
     "code, so the target is met within this machine's noise, not reliably. The execution rows divide by the "
     "converted model's `ann` mode, which runs the blocked attention too and got faster (one process, the "
     "models timed in turn, 4,096 tokens: `ann` / unconverted 1.08x now, 1.23x on the previous commit), so fused "
     "/ ANN reads higher (1.38x) while the fused forward is unchanged (same interleaved check on 2,048 tokens: "
     "fused / ann 1.37x now and 1.31x before, metered 1.76x and 1.79x). The timestep and metered rows move by up "
     "to 2x between runs of unchanged code on this machine (T = 10 metered 10.4x here, 20.1x in the first "
     "table): compare them within a run only."),
    ("lm_eval_throughput", "lm-eval throughput: hf vs spiking-hf",
     "Same 4 documents of `spiking_enwiki_ppl_short`, after a warm-up document per model; every model is "
     "loaded first and the variants then run in turn for 3 rounds, each row the median (`runs`: each "
     "round's seconds), because this machine's speed drifts by tens of percent within minutes (hf: 10.0 to "
     "14.0 s here). Target: metered fused >= 0.9x hf, not met: 0.87x. Two runs of the day on this code "
     "path: with the value-only kernel and one-loop compilation (speed table) but the softmax's count still "
     "from spike bit patterns and column sums, metered 0.84x and unmetered 0.96x; with the softmax site "
     "summing its spikes weighted by V's spikes per key inside its own kernel (this table), metered 0.87x "
     "and unmetered 0.85x. The unmetered row reading below the metered one shows the noise: the third round "
     "ran about 30% slower for every variant, so differences under about 0.1x between these rows are not "
     "measured. A profile of one metered 2 x 512-token forward (before the last change) had put 8.4 ms a "
     "layer in the softmax pattern kernel (4.3 ms for its value alone) and 3.3 ms a layer in the column "
     "sums; both are gone. What is left of the meter: the q/k/v frames with the Q K^T prefix sums, the "
     "gate-product coincidence kernel and the spike counts. "
"The energy meter's exact activation-activation counts are the difference between the two fused rows "
     "(P V from the softmax kernel's spikes weighted by V's per-key spikes, Q K^T from prefix sums over keys, "
     "as compiled passes, with the mask's counts built once per forward; gate-product "
     "coincidences from a kernel; none of them materializes T full maps). The W8 / W4 rows are from an "
     "earlier run (2026-12-03, before the compiled meter sums), each ratio against that run's hf. In fp32 the fused and timestep "
     "executions round differently and a few spikes at a threshold flip (float64: identical, see the tests). `W8` / `W4`: fused on checkpoints converted with `--weight-bits 8` / `4` (torchao weight-only tensors, metered; on CPU they dequantize inside every call, so they save weight memory, not time; the CUDA int4 kernels need a GPU, none lent). Their perplexity is against their own quantized ANN, not hf's; the W4 checkpoint predates the HQQ scales (same kernels, so the same speed; its perplexity is the max-scaled W4's)."),
    ("blocked_attention", "The spiking executions a block of query rows at a time",
     "SmolLM2-135M converted once (2k-token calibration, T = 8); every execution timed with the blocks and with "
     "a no-op hook on each softmax site, which makes the attention build the whole map as it did before the "
     "blocks; the ANN and the variants run in turn, 2 rounds, medians, one window of each length (the same "
     "code and tokens, so the ratios are this change alone). The blocks skip what the causal mask hides: at "
     "512 tokens about a third of the map (fused 1.10x faster, metered 1.14x), at 2,048 tokens about half "
     "(fused 2.06x -> 1.33x the ANN, metered 2.60x -> 1.60x), and the time-stepped execution, whose T "
     "accumulated maps dominated, 1.71x faster at 1,024 tokens (metered 1.47x). The values are the whole "
     "map's (float64 test to 1e-12, same spike and AC counts); peak memory drops with the map too (a 1 x 2,048 "
     "timestep map is 1.2 GB per T-stacked tensor whole, a 128-row block at most a sixteenth of it)."),
    ("speed_spiking_blocks", "Conversion and execution speed with the spiking attention in blocks",
     "The speed table after the spiking executions moved to the blocks too (the table above compares the two "
     "paths directly), with the execution rows now interleaved: the ANN, fused and metered forwards (4 x 512 "
     "tokens) and the ANN and timestep forwards on one 512-token window run in turn for 3 rounds, each ratio "
     "from the medians (the tables above timed one forward each, back to back, which measured the drift as much "
     "as the code). Fused / ANN 1.12x at T = 8 (1.38x in the table above, which built the whole map), metered "
     "1.38x (2.12x). Timestep / ANN 8.56x at T = 8 and 6.57x at T = 6 (targets 8 and 6: not met), 9.99x at "
     "T = 10 (met): the time-stepped execution runs every linear T times, and what stays above T is its "
     "per-step elementwise work (running sums, step differences, the softmax of T accumulated maps). "
     "Conversion / plain forward 1.34x in this run (the conversion is unchanged by this change; 1.27x and "
     "1.44x in the runs above): the 1.3x target stays within this machine's noise, not reliably met."),
    ("speed_mass_default", "Conversion and execution speed with the mass correction on by default",
     "The speed table re-run after the attention mass correction became the default and the time-stepped "
     "products started building each operand's running sum straight from its frames (one multiply-add per step, "
     "no weighted copy of the frames first). This session's machine runs the ANN much faster than the one "
     "above (a 2,048-token ANN forward 3.09 s against 4.43 s; the 16k-token plain forward 24 s against 39 s) "
     "while the spiking executions' elementwise work did not speed up alike, so every ratio to the ANN is "
     "higher here and the rows are not comparable with the table above. What the code changes did, measured "
     "in one process on one T = 8 checkpoint (4 x 512 tokens fused, 1 x 512 timestep, 4 interleaved rounds, "
     "medians of the last 3): fused 1.36x the ANN with the mass correction off, 1.48x on; metered 1.86x / "
     "1.96x; timestep with the previous product code 8.93x, with the new one 8.47x (8.44x with the mass "
     "correction), the same logits to the last bit. The mass correction's cost then fell: it had found each "
     "block's key bounds from the mask and the mean values by prefix sums per block and layer; the bounds now "
     "come once per forward and the means once per layer (the blocks slice them): in a second such run fused "
     "1.32x (off) / 1.36x (on), metered 1.91x / 1.90x (the first run: 1.36x / 1.48x and 1.86x / 1.96x); the "
     "table below was measured before this change. The conversion ratio (1.68x here, 1.34x above) moved "
     "with the machine too: calibration is the analog forward plus the reservoirs' elementwise work, and the "
     "ANN forward it is compared with got 1.6x faster. The targets stay not met on this machine: conversion <= 1.3x "
     "one forward, timestep <= T x the ANN."),
    ("lm_eval_throughput_blocks", "lm-eval throughput with the spiking attention in blocks",
     "The lm-eval rows re-run after the spiking attention moved to the blocks (a fresh default checkpoint, hf "
     "and the spiking variants in turn, 3 rounds, medians; the W8 / W4 rows are in the table above; the word "
     "perplexity moved with the fresh checkpoint's calibration draw). Unmetered fused 0.93x hf (0.85-0.96x "
     "before), metered 0.82x (0.84-0.87x before): this task's documents are cut to 300 words (about 400 "
     "tokens), where the blocks skip only about a quarter of the map, so the change is inside this machine's "
     "noise here (it pays at longer windows, table above); the metered target (0.9x) is not met. What the "
     "meter adds at this length (cProfile of a 1 x 400-token fused forward, 3 runs): 0.23 s on 1.48 s, two "
     "thirds of it in the attention (the softmax site's weighted kernel, the q/k/v spike frames and the "
     "Q K^T prefix sums), the rest in the gate-product coincidences and the other sites' counts."),
    ("lm_eval_throughput_long", "lm-eval throughput and perplexity on whole documents (long windows)",
     "The same comparison on `spiking_enwiki_ppl` (whole documents; lm-eval scores each in windows up to the "
     "model's 8,192 positions), its first 2 documents (5,606 and 1,263 tokens), 3 interleaved rounds, the same "
     "fresh default checkpoint as the table above. At these lengths transformers' fused attention kernel (`hf`, "
     "SDPA) pulls ahead: unmetered fused 0.78x hf, metered 0.61x, although the blocks already skip about half "
     "of each map (on one 2,048-token window the blocks and the whole map give the same perplexity, 10.71 "
     "and 10.72, and logits within fp32 spike flips). **Quality falls with the window length too**: word "
     "perplexity 49.1 against hf's 33.1 here, where 512-token windows give +1.0% token perplexity over the ANN "
     "and one 2,048-token window +5.8% (same checkpoint). The conversion calibrates on 512-token windows; a "
     "likely cause, not measured yet: in a long row more of the attention probabilities lie below the softmax "
     "neuron's finest step (the mass the attention mass correction, off by default, gives back). Not fixed "
     "here: a finding for the quality work (calibration windows as long as the evaluation's, the mass "
     "correction at long windows). Found and fixed since: the next section."),
    ("long_windows", "Quality on windows longer than the calibration's",
     "SmolLM2-135M at T = 8, one calibration (16k tokens in 512-token windows) re-normalized per q/k tau variant, "
     "3 fitting seeds each, every fit evaluated with and without the attention mass correction on 8,192 held-out "
     "enwiki-excerpt tokens cut into 512-token and into 2,048-token windows and on 8,192 held-out Botchan tokens; "
     "means over the seeds (`std`: of `vs ANN`), against the plain ANN and the analog reference (same prefix "
     "and rotation, sites analog). What made the 2,048-token windows worse (one fit, each site type analog in "
     "turn, 2 windows): the q sites (-2.4% perplexity when analog) and the softmax map (-2.6%), everything else "
     "within 0.4%. q and k are coded after RoPE, whose slow pairs barely turn over 512 positions: a per-channel "
     "tau fitted there is small for the channel that holds little of its pair's norm, and thousands of "
     "positions later the norm has turned into it and clips (k had 1.5x headroom and suffered less). One tau "
     "per RoPE pair (the larger maximum; `rope_pair_tau`) takes the 2,048-token windows from +5.8% to +2.7% "
     "over the ANN. The rest is the softmax map: a 2,048-key row has smaller probabilities, more of them below "
     "the neuron's finest step; the mass correction gives that mass back, +2.7% -> +0.5%. At 512 tokens both "
     "are neutral to slightly better (+0.52% -> +0.44%), on Botchan too (+0.34% -> +0.16% vs the analog "
     "reference), for 0.1% less energy (the paired taus fire less; the correction's MACs add 0.05%). Both are "
     "now the default recipe (`--no-rope-pair-tau`, `--no-mass-correction` leave them out)."),
    ("lm_eval_throughput_long_defaults", "Whole documents in lm-eval with one tau per RoPE pair and the mass correction",
     "The whole-document run of the section before last, repeated on a fresh checkpoint of the new default "
     "recipe (`spiking-lm convert --model smollm2-135m -T 8`: one tau per RoPE pair at q and k, the attention "
     "mass correction), 1 round. Word perplexity 33.64 against hf's 33.08 (+1.7%), where the previous recipe "
     "gave 49.09 (+48%). The seconds are this session's machine, whose ANN (and SDPA) is faster than the one "
     "above while the spiking forward took as long as there (66.6 s against 66.9 s metered), so the "
     "throughput ratio is not comparable with the earlier rows."),
    ("scale", "Conversion cost vs model size (random-weight LLaMA configs, CPU)",
     "How calibration forward and fitting grow with the model: 4,096 calibration tokens each, default recipe "
     "(random weights have no outlier tokens, so the prefix search finds none). The calibration forward grows "
     "with parameters x tokens; the fit with the number of sites (10 per layer) only. No GPU was lent, so the "
     "7B-shaped H100 row is missing. Measured on 2026-11-23 with Alg. 1 fitting (then the default) and not "
     "re-run since: with the joint default expect a higher fit column (fitting throughput table)."),
    ("scale_bfloat16", "Converting a LLaMA-2-7B-shaped model in bf16: memory",
     "The LLaMA-2-7B shape (hidden 4096, intermediate 11008, 32 layers, vocabulary 32,000) with random "
     "weights built directly in bf16, converted with the default recipe on 1,024 calibration tokens, one size "
     "per process so the peak RSS is this conversion's. Target: peak memory at most 1.3x the weights' bytes "
     "(what a GPU user needs beyond the model itself). Random weights: timings show cost, not quality."),
    ("transform_fallback", "The exact fallback transform against the true Hadamard",
     "Where no Hadamard construction is known for a down_proj input size, the online transform is a seeded "
     "random orthogonal matrix on the odd part times a Walsh-Hadamard on the power of two (still exact and "
     "orthogonal, the same cost class). No popular model needs it today; this table forces it on SmolLM2's "
     "1536 (3 x 512) to show what it would cost against the Hadamard 12 x 128 the default uses. `vs analog` "
     "compares each row with its own analog reference (same prefix and transform, every site analog)."),
    ("architectures", "What each decoder family costs (tiny random models, one shape)",
     "Every supported family at one shape (hidden 256, intermediate 512, 4 layers, random weights from its "
     "transformers config class), the default recipe at T = 8 fitted on random tokens: energy per token "
     "from the meter and the fused / ANN forward time in one run. Random weights: the firing rates and "
     "savings show what the architecture's features cost (q/k norms, GeGLU, soft-capping), not what a "
     "trained model of that family would fire; no registry package ships these families' weights."),
    ("startup", "Start-up: the import hook and the command line",
     "What a user pays before any work. The `.pth` hook runs at every interpreter start in the environment "
     "(target: well under 5 ms; it imports no module at all). `--help`, `tasks-dir` and argument or recipe "
     "errors answer without importing torch (target: under 1.5 s)."),
]


def main() -> None:
    parts = ["# Benchmarks\n",
             "Every table below is regenerated by the command printed above it (`bash bench/run_all.sh` runs them "
             "all, then `python bench/render.py` rebuilds this page). Machine: the project's CPU machine (2 cores, "
             "24 GB); no GPU has been lent to this project's sessions, so no GPU rows yet. Our numbers are on "
             "SmolLM2-135M; the paper's on LLaMA-2-7B / LLaMA-3-8B.\n"]
    for name, title, text in SECTIONS:
        table = RESULTS / f"{name}.md"
        parts.append(f"## {title}\n\n{text}\n")
        parts.append(table.read_text() if table.is_file() else "_not measured yet_\n")
    Path("docs").mkdir(exist_ok=True)
    Path("docs/BENCHMARKS.md").write_text("\n".join(parts))
    print("wrote docs/BENCHMARKS.md")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()   # --help explains; no options
    main()
