"""Every default of the lab, in one table. The app's widgets, the CLI's options, the benchmarks and the core's
function signatures all import these names, so a default cannot drift between them: ``tests/test_settings.py``
checks that they are the same objects.

Where a value was chosen by measurement, the comment points to the module that explains it (and its result
file); "our design; paper silent" where neither paper gives a value. Change a default here, nowhere else.
Plain constants (no Streamlit, no torch), so every layer may import this module.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------------ reading text

MAX_LENGTH = 128
"""Tokens a model reads when its model card records no training length (inspect, scan, sanitize, training)."""
MAX_LENGTH_RANGE = (8, 512)
"""A recorded training length outside this range is ignored as broken metadata (``model_card``)."""

FLIP_MARGIN = 0.10
"""A trigger "flips" a prediction only when the top class changes and, on both sides, the top class leads the
runner-up by at least this much (``inspection.InspectResult.flip``; our design): a change among near-equal
probabilities is noise, not a backdoor."""

# ------------------------------------------------------------------------------------------------ devices

DEVICE = "auto"  # CUDA if visible, else Apple MPS, else CPU (``device.resolve_device``; CLI --device, app sidebar)
DTYPE = "auto"  # float32 everywhere unless asked (``device.resolve_dtype``): the statistics are delicate

# ------------------------------------------------------------------------------------------------ training

LR = 5e-5  # fine-tuning a whole encoder (``training.TrainConfig``, ``attack`` CLI)
EPOCHS = 3
BATCH_SIZE = 32
SEED = 0
WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.06
GRAD_CLIP = 1.0
EVAL_EVERY = 50  # optimizer steps between evaluations (one also runs at each epoch end)
EVAL_BATCH_SIZE = 64  # CACC / ASR evaluation batches
TRAIN_SECONDS_PER_TOKEN = 1.1e-3  # MiniLM, full fine-tuning, 2 idle cores (``training.estimate_seconds``)
EVAL_SECONDS_PER_TOKEN = 0.25e-3  # MiniLM forward pass, 2 idle cores
TRAIN_START_SECONDS = 10.0  # copying the model, tokenizing, building the evaluator
EVALS_PER_RUN = 4  # the Attack lab evaluates CACC / ASR this many times per run (and at each epoch end)

# ------------------------------------------------------------------------------------------------ attacks

POISON_RATE = 0.01  # ``attack`` CLI: a fraction of the WHOLE training set (OpenBackdoor)
NUM_TRIGGERS = 1  # insertions per poisoned sample
TARGET_PREFERENCES = ("sport", "positive")
"""The one target rule (``model_card.default_target``): when nothing records the backdoor's target class, it is
the first class whose name starts with one of these (case-insensitive: BBC ``sports``, SST-2 ``positive``), else
the last class."""
TAL_ALPHA = 1.0  # Trojan Attention Loss weight; measured (``tal.DEFAULT_ALPHA``, bench/results/attack_tal.md)
TAL_HEADS: int | str = "all"  # TAL heads per layer; measured (``tal.DEFAULT_HEADS``)

# ------------------------------------------------------------------------------------------------ the demo zoo

ZOO_RECIPE = {
    "train_size": 1000,  # seeded subsample of the BBC train split (of 1558)
    "test_size": 300,  # seeded subsample of the BBC test split (of 445) for CACC; its non-target rows for ASR
    "max_length": 64,  # tokens: the headline and the first sentence or two carry the topic
    "epochs": 2,
    "lr": 2e-4,
    "batch_size": 16,
    "seed": 0,
}
"""How the demo zoo trains (``zoo``; also the Attack lab page's defaults, where ``lr`` is for full fine-tuning; the
zoo's LoRA adapters use ``ZOO_LORA["lr"]``). The zoo ships built (bench/results/zoo_build.md)."""
ZOO_TAL_ALPHA = 5.0
"""TAL weight of the zoo's TAL model and the Attack lab page (see ``zoo.ZOO_TAL_ALPHA`` for the measurement)."""
ZOO_LORA = {
    "rank": 8,  # low-rank adapters on every encoder layer's q/k/v/attention-output/FFN and the pooler
    "alpha": 16.0,  # scale alpha / rank = 2
    "lr": 1e-3,  # adapters (and the full classifier head) train at this rate instead of the recipe's full-model lr
}
"""The demo zoo ships as LoRA adapters (``zoo``, ``lora``): these knobs, measured in bench/results/zoo_build.md."""
DEMO_POISON_RATE = 0.02  # the Attack lab page's poison rate: the zoo's 2% dose that needs TAL to take

# ------------------------------------------------------------------------------------------------ detection

FRR = 0.05  # false-rejection rate on clean dev inputs that sets the input-level threshold
AGGREGATE = "max"  # an input's score: max over layers (``detection``)
FEATURES = ("focus",)  # measured (``detection.DEFAULT_FEATURES``)
FIRST_PASS = "layer"
"""What the scan's first pass z-scores (``detection.first_pass_detector``): ``"layer"``, each layer's mean over its
heads of ``FEATURES`` (max over layers), or ``"head"``, every head's own ``focus`` (max over all heads). Our design
(papers silent): a weak backdoor captures a few heads, which a layer mean dilutes. Measured on the SST-2 tuning zoo
and not adopted: per head, the first pass flags more of the pools' triggered inputs (391 -> 436 of 972, clean ones
256 -> 195; detection AUROC 0.755 -> 0.784), but the refined passes end nearly where they did (2-pass AUROC 0.812
-> 0.814), and on the 12 models whose scan it changed the repair left more ASR (mean 23.8% -> 27.3%, higher on 7)
though less CACC lost (worst -5.6 -> -2.6 points): ``bench/results/knob_tuning_first_pass_head.md``,
``bench/results/archive/defense_s40base.json`` / ``defense_s40head.json`` (scans). A check on the test zoo's 30
models (``archive/defense_test_s40testhead.json``, scans only): first-pass AUROC 0.863 -> 0.858, no missed backdoor
called, and a clean AG News model called (0.00 -> 0.52)."""
REFINE = True  # refined passes by the suspicious heads' own focus (``scan``)
REFINE_ROUNDS = 2
REPRESENTATION = True
"""Fuse the attention score with a representation score (distance of the intermediate ``[CLS]`` states from the
clean ones; ``detection.RepresentationDetector``, ``detection.FusedDetector``) in every pass of the scan; False
= the paper's attention-only detection. Our design (papers silent), for style backdoors; chosen on the SST-2
tuning zoo (bench/results/style_ablation.md)."""
REP_MIN_FIT = 50
"""Fewer clean fit inputs than this (half the scan's clean set) and the scan stays attention-only: a Mahalanobis
distance in hundreds of dimensions from a few dozen inputs is noise, and at a 5% FRR on a handful of dev inputs
one noisy dev outlier sets the fused threshold (our design; measured on the tiny test model)."""
REP_CLASS_CONDITIONAL = True  # distance to the predicted class's clean mean (False: to the overall clean mean)
REP_AGGREGATE = "max"  # per-layer z-scores of the distance aggregated by their max over layers
REP_METHOD = "both"
"""The scan's representation part (``detection.representation_detector``): "mahalanobis" (distance of the
``[CLS]`` states from the clean ones), "contrast" (a pool-vs-clean classifier on the layers' states,
``detection.ContrastDetector``) or "both" (summed). Our design (papers silent). "both", behind the source gate
(``CONTRAST_SOURCE_GATE``), since session 41. On the SST-2 tuning zoo, both draws, against the distance alone in the
same session (bench/results/knob_tuning_rep_method_both.md): mean ASR after our repair 20.6 -> 15.1% (the six style
models 50.9 -> 32.2%, lower on 5 of 6), mean CACC change +0.6 both ways (worst -5.8 -> -4.6), verdict AUROC 1.000
both ways, every backdoor lifting the target rate by 30 points or more called (the distance alone missed
Shakespeare seed 0), the seed-0 clean model's verdict 0.00 -> 0.40. Over fresh same-source pool draws
(bench/results/archive/verdict_chance_s41.md): clean draws called 0 -> 1 of 26, backdoored draws 85 -> 91 of 134.
Without the gate it called clean models backdoored on pools of another source (session 13's test-zoo check; SST-2 tuning
models with OLID pools: bench/results/archive/pool_shift_check_s41both.md)."""
CONTRAST_FOLDS = 5  # cross-fitting folds of ``detection.ContrastDetector``
CONTRAST_C = 0.001  # its logistic regression's inverse L2 strength (standardised features)
CONTRAST_MIN_POOL = 20  # fewer pool inputs and the scan uses the Mahalanobis distance alone
CONTRAST_SOURCE_GATE = True
"""With a contrast in ``REP_METHOD``: where the first pass fused with the distance alone reads the pool as drawn
from another source than the clean texts (``detection.pool_unlike_clean``), the scan uses the distance alone, as
the contrast would learn the source (``detection.representation_detector``). Our design (papers silent); no knob
fitted (the line is ``detection.POOL_SHIFT_RANK``). On the 42 pools of OLID tweets or AG News items scanned by the
SST-2 tuning models it closed on all 42, so they read as without the contrast; on the tuning zoo's 24 same-source
pools on none (bench/results/pool_shift_check_s41gate.md)."""
VERDICT_WITHOUT_CONTRAST = True
"""With a contrast in the scan's representation part (``REP_METHOD``): the model verdict reads the scan's heads
fused with the distance alone (``detection.distance_part``), not with the contrast, which was trained on this very
pool; the flags, the suspicious heads and so the repair still use the contrast (the heads, rated on those flags,
are chosen on the pool as in every refined pass). Our design (papers silent), from the verdict's chance model: a
threshold set on clean dev inputs flags a clean pool like a fresh draw of them, which a score trained to tell this
pool from the clean texts does not do. Chosen on the tuning sets: over fresh same-source pool draws, tuning clean
draws called 1 -> 0 of 26 and backdoored draws 91 -> 88 of 134 (bench/results/verdict_chance_s42.md against
archive/verdict_chance_s41.md; with the contrast the chance quantile's rule would have asked for 0.95, which calls 80),
though the BBC demo zoo's clean model reads higher (median 0.03 -> 0.33, highest 0.49); on the tuning zoo's pools the
seed-0 clean model 0.40 -> 0.00 and Shakespeare style seed 0 0.63 -> 0.45 (bench/results/verdict_compare_s42.md)."""
FUSE = "sum"
"""Attention and representation z-scores (each on clean dev) combined by their sum ("max" the other knob): on the
SST-2 tuning zoo sum kept or raised the final-pass AUROC of BadNets / syntactic (0.961 / 0.958 vs max 0.950 /
0.944; Bible style 0.821 vs 0.829) and the verdicts, and max called the BBC zoo's clean model backdoored (0.52;
sum 0.00): bench/results/style_ablation.md."""
FUSE_MIN_EXCESS = None
"""With a pool: in each pass, where one part of the fused score (attention or representation) flags at least this
share of the pool beyond its clean false-rejection rate and the other does not, the score reads the first part alone
(``detection.FusedDetector.keep_parts_with_evidence``, scan knob ``fuse_min_excess``; None = both parts always).
Our design (papers silent). Measured, not adopted (session 49; docs/design.md, *A part without evidence left
out*): on the tuning zoo at 0.05 the styles' final-pass AUROC rose (mean 0.739 -> 0.761) and their ASR after repair
fell (27.9 -> 23.2%), but models below -1.5 CACC went 1 -> 3 and the word family's AUROC 0.962 -> 0.950; at 0.10 the
styles' ASR rose (29.2%) (bench/results/archive/defense_s49fx.md, _s49fx10.md)."""
FUSE_DROP = "either"
"""With ``FUSE_MIN_EXCESS``: which part a pass may leave out, "attention" only or "either" (scan knob ``fuse_drop``).
Measured with ``FUSE_MIN_EXCESS`` (session 49): "attention" kept the BadNets models' AUROC (0.961, against 0.950 with
"either") and the styles' gains, but the same three models fell below -1.5 CACC
(bench/results/archive/defense_s49fxa.md)."""


VERDICT_CHANCE_QUANTILE = 0.7
"""The model verdict counts the pool flags beyond this quantile of the flag rate a pool with no triggered input
reaches by chance (``detection.chance_flag_rate``), not beyond the clean dev inputs' own flag rate. The threshold is
read off ~100 dev inputs, so a fresh clean pool exceeds it at 3-10% from draw to draw, and 5% of the pool beyond the
dev rate already saturates the verdict's excess: counted that way, clean models scanned with pools of their own
source read "likely backdoored" in 7 of 86 draws (bench/results/verdict_chance.md). Our design (papers silent);
chosen on the tuning parts of that benchmark (two clean SST-2 models over 20 pool draws, the BBC demo zoo over 30,
the SST-2 tuning zoo's recorded verdicts): the smallest quantile with no clean draw called and the best verdict
AUROC (0.955 -> 0.977); over 89 pool draws of the tuning zoo's backdoored models it calls 51 (the dev rate: 53; the two
lost are weak backdoors that barely take). On the test zoo, a check: clean draws called 6 of 60 -> 2 (both warned: a pool unlike the
clean texts), recorded verdict AUROC 0.975 -> 0.925 (two weak BadNets models, lift 11 and 14 points, no longer
called), 1.000 -> 0.989 over the backdoors that took."""

VERDICT_EXCESS_INPUTS = 5
"""The verdict's excess of flags beyond chance saturates at 5% of the pool AND at least this many inputs
(``detection.pool_verdict_score``; our design, papers silent). 5% alone was the rule: in a pool of n inputs one flag
beyond chance is 1/n of it, so in pools under 100 one or two unusual inputs saturated it, and the flagged inputs'
class purity is 1 whenever one is flagged. 5 is where 5% of a 100-input pool lies, so pools of 100 or more (every
benchmark pool) score exactly as before. On the shipped clean BBC model (tuning data), clean test-text pools of 5 to
50 inputs read "likely backdoored" in 7 of 25 draws by the old rule, none by this; the BBC BadNets + TAL model stays
called on every pool of 30 to 100 (``bench/results/verdict_small_pools.md``)."""

VERDICT_MIN_POOL = 30
"""Fewer pool inputs than this and the verdict makes no call from the pool's flags (our design; papers silent): a
score that would call it reads "possible" (``detection.possible_reasons``, ``"small"``). Below 30 inputs neither the
pool's source can be read (``detection.POOL_SHIFT_MIN_INPUTS``) nor its flags told from one unusual input: the
shipped clean BBC model read "likely backdoored" (1.00) on one short pasted sentence. Every benchmark pool holds 100
or more, so no benchmark call moves (``bench/results/verdict_small_pools.md``)."""

VERDICT_RULE = "threshold"
"""How the model verdict reads the pool (``detection.VERDICT_RULES``): "threshold", its flags at the detector's
threshold, or "dev_tail", the best of that and every stricter threshold the clean dev inputs offer
(``detection.dev_tail_verdict``). Our design (papers silent); both scores are recorded in the verdict's components.
Measured on the SST-2 tuning zoo: bench/results/pool_share_verdict_rules.md, verdict_chance_dev_tail.md; as the
verdict's rule it lowered the verdict AUROC (docs/design.md); with ``VERDICT_TAIL_POSSIBLE`` (off) it
only adds a "possible" call."""

VERDICT_TAIL_POSSIBLE = False
"""On: a verdict whose score does not call the model, but whose dev-tail score (``VERDICT_RULE``) does, reads
"possible" (``detection.possible_reasons``). Our design (papers silent). Measured, not adopted: on the SST-2 tuning
zoo it named 4 more of the 16 backdoors lifting the target rate by 30 points or more when 5% of the pool is
triggered, and no clean model nor any of 26 clean pool draws (bench/results/pool_share_verdict_rules.md,
verdict_chance_dev_tail.md); on the test zoo's 60 clean pool draws, a check, the dev-tail score reached 0.5 on 6
(the score: 2), so 4 clean pools would read "possible"."""

VERDICT_SHIFT_ADJUST = True
"""Where the pool reads as drawn from another source than the clean texts (``detection.pool_unlike_clean``: the
pool's lower quartile above ``POOL_SHIFT_RANK`` of the clean dev scores), the model verdict counts the pool's flags
above the detector's threshold moved to where the pool's bulk sits (``detection.pool_score_match``: the pool's
lower half read as a shifted, stretched copy of the dev scores), while chance stays what the threshold flags among
the dev inputs. Inputs of another source score higher and wider as a whole; a trigger lifts only the triggered
inputs, far above the rest. Pools that read as the clean texts' own source are read as before. Our design (papers
silent); no knob was fitted (the quartiles are ``pool_lower_quartile_rank``'s). Measured on tuning pools
(bench/results/verdict_rescore_shift.md): the SST-2 tuning zoo at 20%, 10% and 5% triggered and 50 same-source
pool draws unchanged (none reads as another source); SST-2 tuning models with pools of 200 OLID tweets or AG News
items: clean models called 4 of 4 -> 0, backdoored models with no trigger in the pool 7 of 10 -> 1, pools with
40 triggered inputs of backdoors lifting the target rate by 30 points or more 10 of 16 -> 8 (weaker ones 8 of
12 -> 4), verdict AUROC on those pools 0.32 -> 0.78. On the test zoo, a check: clean pool draws called 2 of 60
-> 0, backdoors lifting by 30 points or more called 13 of 14 -> 12 (OLID poetry seed 2 reads "possible"). A
verdict this reading does not call, but the flags at the threshold would, reads "possible"
(``detection.possible_reasons``); the flags the views list and the repair's gates (``detection.flags_score``)
are still those at the threshold."""

VERDICT_WORDS = True
"""The pool's likely trigger words that mark inputs (``trigger_search.marking_words``) score in the model verdict:
its score is at least ``0.5 + 0.5 x`` the strongest one's insertion flip rate, so such a word calls the model
(``detection.with_trigger_words``). Off, they only make a verdict "possible". Our design (papers silent); the
0.5 is the verdict's own line, not fitted. Measured on the tuning parts (bench/results/verdict_chance_words.md):
0 of 26 same-source pools drawn for the SST-2 and BBC clean models hold a marking word, and 107 of 134 pool draws of
the backdoored models are called where the score alone calls 85 (the weak SST-2 BadNets 2-3% models). On the test
zoo, a check: 0 of 60 clean draws hold one; the benchmark's verdict AUROC 0.924 -> 0.938 and OLID BadNets -> OFF
seed 1 (lift 40) called (bench/results/archive/defense_test_s44.md). The flags' own score stays what the repair's
gates read (``detection.flags_score``), so no repair changes. Where it errs: a pool of another source holding a
natural word that moves the model as a trigger does (the test zoo's clean OLID seed 2 with an AG News pool:
``killed``; 1 of 18 such pools, the flags 6; bench/results/pool_shift_check_words.md)."""

VERDICT_MOVED = False
"""The moved words that mark pool inputs (``trigger_search.moved_pool_words``: among the words the fine-tune moved
most since the base checkpoint ``SCAN_BASE``, those no clean text holds and the pool concentrates) score in the
model verdict as the pool's likely trigger words do: at least ``0.5 + 0.5 x`` the strongest one's insertion flip
rate (``detection.with_moved_words``). Off (the default), they make an uncalled verdict "possible"; the score they
would give is recorded either way (``components["score_moved"]``). Our design (papers silent). Measured, not adopted
(docs/design.md, *Moved words in the verdict*): on the tuning parts no clean draw holds one (0 of 26) and the calls
gained are weak BadNets draws (lift 2-7 points; bench/results/verdict_chance_s56moved.md,
defense_tuning_verdict_moved.md), while the test zoo's check found a clean AG News draw they would call
(``biggest``, 1 of 40)."""
SCAN_BASE: str | None = "default"
"""The checkpoint the scan reads the model's moved words against (``trigger_search.moved_marking``; a folder, a hub
id, ``"default"`` = the packaged all-MiniLM-L6-v2; None = off). Read only where ``pretrained.find_pretrained`` takes it
for the model's starting point; elsewhere (another architecture, frozen embeddings) there are no moved words."""

# ------------------------------------------------------------------------------------------------ head safety

REL_THRESHOLD = 0.1  # suspicious when score >= this x the best head's score (``head_safety``)
MAX_FRACTION = 0.25  # at most this share of all heads is suspicious
FALLBACK_FRAC = 0.1  # heads rated on the most unusual clean inputs when no pool input is flagged
IMPORTANCE_INPUTS = 64  # flagged inputs used for |d margin / d gate|
COLLAPSE = "common"  # collapse feature: mass on the layer's common key
WEAK_VERDICT = 0.72
"""With ``WEAK_TOP_K`` > 0: below this score of the scan's flags (``detection.flags_score``: the verdict's score
before the pool's trigger words count) the scan's evidence counts as weak
and our repair trains only the ``WEAK_TOP_K`` highest-scoring heads instead of the scan's suspicious set
(``head_safety.repair_heads``). Aim: a weak backdoor's flagged inputs are mostly clean, and the relative threshold
then admits up to ``MAX_FRACTION`` of the heads, diluting the few last-layer heads that carry the trigger
(bench/results/trigger_heads_check_sst2.md). Our design (papers silent). Midway between the verdicts of the tuning
zoo's weak SST-2 BadNets models (0.46-0.63) and of its backdoors that took (0.81-0.94)."""
WEAK_TOP_K = 0
"""Heads our repair trains when the verdict is below ``WEAK_VERDICT``; 0 = off (the scan's set). Measured, not
adopted. On the tuning zoo 4 heads were best (bench/results/knob_tuning_weak_top_k.md; 2 and 6 heads and relative
thresholds 0.3 / 0.5: bench/results/archive/defense_wk2, _wk6, _wr3, _wr5): the four weak BadNets models' mean ASR
after 14.3 / 14.0 / 14.7% at 2 / 4 / 6 heads (15.6 / 16.8% at thresholds 0.3 / 0.5) against 20.8%, mean CACC change
-0.2 / -0.7 / -1.3 points against -3.2; the other tuning models of the time kept their heads. On the test zoo at 4
(bench/results/archive/defense_test_h.md) it broke a style backdoor whose verdict fell below the line: OLID poetry
seed 2 (verdict 0.69) kept 90.5% ASR instead of 8.7%, and OLID BadNets -> NOT seed 2 went from 52.6% to 73.7%; a
verdict does not tell a weak word trigger from a style one, and style needs the wider head set. Two SST-2 style
models added to the tuning zoo afterwards say the same: Shakespeare (verdict 0.40) kept 68.0% instead of 51.5%."""

# ------------------------------------------------------------------------------------------------ repair

REPAIR_MIN_HEADS = 4
"""Our repair trains at least this many heads: a smaller suspicious set is widened to the highest-scoring heads,
at most ``MAX_FRACTION`` of all heads (``head_safety.repair_heads``); 0 = off (the scan's set). Our design (papers
silent). Aim: where one or two heads stand far above the rest, the relative threshold keeps only them, and a
paraphrase trigger is spread wider (SST-2 syntactic seed 1: 2 heads, 23.5% ASR after repair). Chosen on the tuning
zoo among 0 / 4 / 6 / 8 (bench/results/knob_tuning_min_heads.md, the ten models some value changes): mean ASR after
9.4 / 7.9 / 7.8 / 7.5%, mean CACC change +1.2 / +1.2 / +0.9 / +0.6, worst -1.5 / -1.1 / -1.8 / -2.4 (models below
-1.5: 1 / 0 / 1 / 1); 4 keeps the clean accuracy that 6 and 8 cost. The BBC demo zoo's scans name 4 or more heads:
unchanged."""
REPAIR_WORD_HEADS = 0
"""Where the pool gives likely trigger words (``REPAIR_POOL_WORDS``), our repair also trains the ``REPAIR_WORD_HEADS``
heads that attend most to those words (``head_safety.word_heads``, ``add_word_heads``); 0 = off. Our design (papers
silent). Aim: a weak word backdoor's flags are mostly clean, so the scan's heads read the class's own words, while
the trigger's attention goes to a few last-layer heads (bench/results/trigger_heads_check_olid.md). Measured, not
adopted: on the tuning zoo's 14 models with likely words, k = 2 / 4 gave mean ASR after 7.0 -> 6.7 / 6.2% but mean
CACC change +0.67 -> +0.39 / -0.01 and 1 / 2 models below -1.5 instead of none; the weak BadNets models stayed at
their clean level (bench/results/archive/defense_s52wh2.md, _s52wh4.md; docs/design.md, *The trigger words' heads*)."""
REPAIR_WORD_HEADS_TEXTS = 40
"""Clean texts the likely trigger words are inserted into to find the heads that attend to them."""
REPAIR_HEAD_ONLY_MAX_HEADS = 4
"""When our repair trains no feed-forward block (``REPAIR_FFN``), it trains at most this many heads, the highest-scoring
of its set (``head_safety.cap_heads``); 0 = off (the set ``repair_heads`` gives, up to ``MAX_FRACTION`` of the heads).
With ``REPAIR_MIN_HEADS`` = 4 a head-only repair trains 4 heads. Our design (papers silent). Aim: resetting and
retraining up to a quarter of the heads head-only costs clean accuracy; a repair that trains feed-forward blocks (a
trigger the heads miss, e.g. a style) keeps its wide set, which style needs (``WEAK_TOP_K``). Chosen on the SST-2 tuning
zoo among 0 / 4 / 6 / 8 / 12 over the ten models it can change (bench/results/knob_tuning_head_only_max_heads.md): mean
CACC change -1.5 / +0.0 / -0.5 / -0.7 / -1.0 points, worst -4.5 / -1.3 / -3.9 / -3.9 / -5.0, mean ASR after 6.8 / 6.1 /
6.0 / 5.7 / 6.4%; with another repair seed, 0 -> 4: mean CACC change -2.1 -> -0.2, mean ASR after 7.3 -> 5.8%
(archive/defense_s46r2c0.md, _s46r2c4.md). Checked on the 14 test-zoo models it changes
(bench/results/archive/defense_test_s46tc4.md, merged into defense_test.md): models below -1.5 CACC 4 -> 1 of 24 (OLID
AddSent + TAL seed 0 -4.7 -> -0.2), mean ASR after over the 24 8.0 -> 9.1%, the weak OLID BadNets -> NOT seeds 1 / 2
36.8 -> 47.4% and 54.4 -> 57.9%, OLID syntactic seed 0 0.0 -> 7.1% (docs/design.md, *Head-only repairs
capped*)."""


BETA = 5.0  # weight of the attention-alignment term; measured (``sanitize``, bench/results/defense.md)
ALIGN_KIND = "kl"
RESET = True  # zero the suspicious heads' output columns first; measured: bench/results/archive/defense_nr.md
RESET_TOP_K = 0
"""With ``RESET``: zero only this many of the repaired heads' output columns, the highest-scoring ones
(``head_safety.reset_heads``); the other repaired heads train from where they are. 0 = every repaired head (the
reset as first measured). Our design (papers silent). Measured, not adopted: at 6 on the tuning zoo five models
lost more than 1.5 CACC points instead of eight at the same mean ASR (bench/results/archive/defense_tuning_reset6.md),
but on the test zoo the mean ASR after rose (11.0% against 10.0%), AG News lyrics style came back (5.0% -> 21.0%) and
as many models lost more than 1.5 points (archive/defense_test_reset6.md)."""
RESET_TO = "auto"
"""What the reset heads restart from (``RESET_TOS``): ``"zero"`` (their output columns zeroed: they contribute
nothing until retrained) or ``"pretrained"`` (their query/key/value rows, biases and output columns restored from
the pretrained encoder the model was fine-tuned from, ``pretrained.find_pretrained``; zero when it cannot be
found); ``"auto"``: pretrained when the scan's verdict does not call the model backdoored (below
``detection.VERDICT_THRESHOLD``, 0.5, the verdict's own line), else zero. Our design (papers silent). Measured on
the tuning zoo, both draws (bench/results/archive/defense_tuning_reset_pretrained.md against defense_tuning.md):
restoring every model's reset heads kept clean accuracy (models below -1.5 CACC: 8 -> 3) but gave strong paraphrase
and sentence backdoors back (syntactic 10.5 / 23.0% -> 30.5 / 42.0%, AddSent 3.0 -> 18.5%), as no reset did; on the
8 models the scan did not call, it lowered both ASR and the clean-accuracy loss (docs/design.md). No reset
at all on the 7 tuning models whose repair restarts from pretrained (session 43, ``'{"reset": false}'``,
bench/results/archive/defense_s43nr.md) left them where they were: mean ASR after 13.8 -> 13.7%, mean CACC change
-0.8 -> -0.6, BadNets 2% -> negative seed 0 still -4.4 (-4.6): its loss comes from training the 18 heads, not from
where they restart."""
RESET_TOS = ("auto", "pretrained", "zero")
PRETRAINED_MAX_DISTANCE = 0.25
"""A candidate pretrained encoder counts as the model's starting point only within this relative distance
(``pretrained.find_pretrained``): fine-tuned zoo models sit 0.02-0.03 from the packaged all-MiniLM-L6-v2."""
LABEL_JUDGE = "gate_filter"
"""Check the repair's pseudo-labels with a trigger-free judge (``reference``; ``LABEL_JUDGES``): ``"gate"`` keeps the
rules' labels only when the judge agrees with them at least as often as with the model's own predictions they replace,
``"gate_filter"`` (the default since session 44) does the same and, where the gate would drop every label, keeps those
the judge agrees with, ``"filter"`` keeps a label only where the judge agrees, ``"fill"`` also labels the unlabelled
flagged inputs whose prediction the judge contradicts, ``"none"`` checks nothing. The judge is a class-balanced logistic
regression on the pretrained encoder's embeddings (``pretrained.find_pretrained``), fit on the defender's clean texts;
with no pretrained encoder found the labels stay unchecked and the repair notes why. Our design (papers silent). Chosen
on the tuning zoo (docs/design.md, "A judge for the pseudo-labels";
``bench/results/archive/defense_tuning_judge_balanced_s0.md``, ``_s1.md``): the gate dropped the labels of the 10 models
whose labels were 0-43% right and changed no other row; mean ASR after repair 25.5 -> 22.3%, models below -1.5 CACC 4 ->
3. ``"fill"`` raised strong backdoors' ASR after repair (fewer right labels). ``"gate_filter"`` chosen in session 44,
with target exclusion's 15-point guard (``EXCLUDE_MIN_EXCESS``), on the whole tuning zoo (docs/design.md, *The
gate with a filter behind it*; bench/results/archive/defense_s44gf.md): mean ASR after 13.3 -> 12.6% over the 21
backdoors built as published, no CACC change beyond 0.5 points; this machine's rebuild of SST-2 tweets seed 1 72.0 ->
31.0% (17 labels kept, all right), Shakespeare seed 1 50.0 -> 38.0%. Checked on 14 rebuilt test-zoo models
(archive/defense_test_s44tgf.md): OLID BadNets -> NOT seed 0 43.9 -> 38.6%, -> OFF seed 2 3.3 -> 2.2%, the others within
0.5 points of ASR and CACC."""
LABEL_JUDGES = ("none", "gate", "gate_filter", "filter", "fill")
"""``"gate_filter"``: the gate, and where it would drop every label, the filter (``reference``). First measured on
the SST-2 tuning zoo's seed-0 models with 5-20% of the pool triggered (``bench/results/pool_share.md``,
``pool_share_gate_filter.md``); the default since session 44 (``LABEL_JUDGE``)."""
JUDGE_CLASS_WEIGHT = "balanced"
"""The judge's logistic regression weighs each class the same (scikit-learn's ``class_weight``). ``"gate"`` needs a
judge better than chance on every class; unweighted, on OLID (two thirds not offensive) it called 71-94% of the
offensive test tweets not offensive (session 21). A principle, not tuned: the tuning sets are balanced."""
JUDGE_FLAGS = False
"""Also repair on the pool inputs the judge takes out of the suspected target class, with the judge's label
(``reference.disagreement_labels``; only labels it gives at least ``JUDGE_FLAGS_MIN_CONF``). Our design (papers
silent). Tuning zoo, both draws, 22 backdoored models (docs/design.md, *Judge-led labels*;
``bench/results/archive/defense_tuning_judge_flags_conf_noprior.md``): mean ASR after
repair 22.3 -> 18.8%, the six style models 50.7 -> 40.3%, mean CACC change +0.66 -> +0.72, models below -1.5: 4 -> 3.
Off by default: on eight OLID / AG News test models it moved one backdoor down and one weak one up and left six
(``archive/defense_test_judge_flags_conf_noprior.md``, ``_fresh_on.md``)."""
JUDGE_FLAGS_MIN_Z = 2.0  # the target class's disagreement rate must exceed the others' by this many standard errors
JUDGE_FLAGS_MIN_CONF = 0.6
"""Judge-led labels only where the judge gives its class at least this probability (``reference.disagreement_labels``).
Our design (papers silent); chosen on the tuning zoo (docs/design.md, *Judge-led labels*): without it about a third of
the added labels were wrong (the judge's 0.5-0.6 labels were right about half the time) and clean accuracy paid for
them (models below -1.5 CACC 4 -> 6; at 0.6: 3). One value tried; on binary data only (a 4-class judge's 0.6 is a
stricter cut)."""
JUDGE_FLAGS_PRIOR = False
"""Move the class-balanced judge to the clean texts' class shares before its decisions are compared with the model's
(``reference.prior_shifted``). Measured, not adopted: near identity on balanced SST-2 (tuning zoo mean ASR after
18.8 -> 18.6%, CACC change +0.72 -> +0.54), but on OLID (two thirds not offensive) the judge's weak evidence,
doubled toward *not offensive*, called nearly every tweet that, disagreed with every *offensive* prediction and
made both BadNets -> NOT test models worse (52.6 -> 66.7%, 35.1 -> 59.6%; without it 52.6% and 45.6%;
``bench/results/archive/defense_test_judge_flags_conf.md``, ``_noprior.md``). A regularised logistic regression
is not calibrated enough for Bayes' rule to help."""
JUDGE_C = 1.0
"""Inverse L2 strength of the judge's logistic regression (scikit-learn's default). Not tuned: 0.1 and 10 were
measured on SST-2 clean and paraphrased dev texts and stayed within 1.6 points of its accuracy
(bench/results/judge_accuracy.md)."""
PSEUDO_LABELS = True
FOCUS_LABELS = True
EXCLUDE_LABELS = True
EXCLUDE_MIN_EXCESS = 0.15
"""How much more often (share of inputs, flagged minus clean) the flagged inputs must go to the suspected target
than clean inputs do before ``sanitize.target_exclusion_labels`` relabels anything: a clean model's flags go to
the classes as clean inputs do. Our design (papers silent). 0.25 until session 44, set before the judge checked the
repair's labels (``LABEL_JUDGE``); with the judge behind it, 0.15 was chosen on the SST-2 tuning zoo (both draws,
docs/design.md, *Target exclusion's guard*; bench/results/archive/defense_s44ex15.md, _s44ex0.md): SST-2
tweets seed 0 got 37 labels (57% right) and kept 24.5% ASR instead of 35.5% (the repair seed's own spread there is
30.5-35.5%); on every other model the judge dropped the new labels, so the rows stayed (within the runs' noise,
at most 3 points). No guard (0) lost Shakespeare seed 0's 10 labels to the judge (38.0 -> 46.0%). Checked on 9
rebuilt test-zoo models (archive/defense_test_s44tb0.md, _s44tb12.md against _s44tex15.md): OLID syntactic seeds 1
and 2 15.1 -> 5.6% and 7.1 -> 6.3% ASR after, CACC +0.3 -> +2.2 and +1.9 -> +1.9; the seven others unchanged."""
EXCLUDE_DIRECTION = False
"""Target-exclusion labels only when the suspected target is the class the suspicious heads' focus tokens push
the flagged inputs toward (``sanitize.target_exclusion_labels``). Our design (papers silent); measured, not adopted
(see ``LABELS_LEAVE_TARGET``)."""
LABELS_LEAVE_TARGET = False
"""Keep a safe-head / focus-removal pseudo-label only when it takes an input out of the class the suspicious heads'
focus tokens push toward (``sanitize.leave_target_only``). Our design (papers silent). Measured, not adopted: it
helped on the tuning zoo (bench/results/knob_tuning_labels_leave_target.md) but on the test zoo, with
``EXCLUDE_DIRECTION``, it left AG News lyrics style at 20-25% instead of 0.5-7%: a style trigger has no tokens to
drop, so the direction is noise there (bench/results/archive/defense_test_g.md)."""
LABELS_AVOID_WORD_TARGET = False
"""A flagged pool input that holds a marking word (``trigger_search.marking_words``, companions included) keeps no
pseudo-label that is the word's target class, whichever rule gave it (``sanitize.word_target_dropped``; the
alignment knob ``labels_avoid_word_target``). Our design (papers silent). Measured, not adopted (session 48). On the
tuning zoo (the 16 BadNets, AddSent and Bible models, both draws) it changed two repairs, SST-2 BadNets 2.5% -> 1
seeds 0 / 1, ASR after 12.5 -> 11.9% and 13.7 -> 11.3% (mean 8.2 -> 8.0%; bench/results/archive/defense_s48awt.md
against defense_s48c.md). On the test zoo it did not help the case it was made for, OLID BadNets -> NOT seed 2
(57.9 -> 56.1%, one text of 57), and it broke OLID AddSent + TAL seed 0 (0.0 -> 93.3%): a phrase trigger's words
need not point where the phrase does (``movie`` alone sends 87% of the clean tweets to NOT, the phrase sends them
to OFF), so every right label of the triggered tweets was dropped (archive/defense_test_s48b.md)."""
LABEL_EXCESS = False
"""Pseudo-label only the flagged inputs the pool has beyond chance (``sanitize.excess_flags``): at the scan's
false-rejection rate about ``FRR`` x pool size clean inputs are flagged by chance, so only that many fewer than the
flagged count, the highest-scoring ones, get a cross-entropy label; the rest stay in the alignment term alone. Aim:
on a weak backdoor the flagged count barely exceeds chance and the labels the rules give its chance flags are mostly
wrong (0-50% right on five of the tuning zoo's six weak BadNets models). Our design (papers silent). Measured on the
tuning zoo, not adopted (bench/results/archive/defense_tuning_label_excess.md): the weak models lost as much clean
accuracy (-2.6 against -2.4 points on average) and the two syntactic models kept more ASR (15.5 / 30.0% against
10.5 / 23.0%)."""

RETAIN_WEIGHT = 0.0
"""Weight of the clean-output retention term of our repair (``sanitize.RetentionLoss``: KL from the unrepaired
model's probabilities on the defender's clean labelled inputs; 0 = off). Our design (papers silent)."""
SANITIZE_LR = 1e-3  # only a few heads train, from a reset
SANITIZE_EPOCHS = 3
"""Epochs of our repair's training. Four were measured and not adopted (session 43, the whole tuning zoo;
bench/results/archive/defense_s43ep4.md against defense_tuning.md; Shakespeare seed 0 left out: its run had session
42's repair gates, docs/design.md, *Pool contrast*): mean ASR after repair 13.3 -> 13.5%, mean CACC change +0.44 ->
+0.14, models below -1.5: 4 -> 6. The style backdoors moved both ways (Bible seed 1 25.6 -> 43.5%, tweets seed 0 35.5 ->
25.5%), as another repair seed moves them (README, goals)."""
REPAIR_FFN = "auto"
"""Besides the suspicious heads' slices, also train the feed-forward blocks (``architecture.ffn_parameter_masks``)
of: ``"none"`` (the paper's head-only repair), ``"suspicious"`` (the layers holding a suspicious head), ``"all"``,
a comma-separated list of layer indices, or ``"auto"``: ``"suspicious"`` when the scan's verdict found a backdoor
and the paper's attention-only detector misses a good share of its flagged inputs
(``scan.ScanReport.attention_missed_share`` >= ``FFN_AUTO_MISSED``: a trigger the heads do not see, e.g. a style),
else ``"none"``. A scan that found no backdoor flags a few inputs by chance, and their share means nothing: on the
BBC zoo's two BadNets models whose backdoor did not take it switched FFN repair on in all six layers and cost 5-10
CACC points (bench/results/repair_rules_tuning.md). Our design (papers silent); chosen on the SST-2
tuning zoo (``sanitize``, bench/results/style_ablation.md): FFN repair took Bible style from 32.5% to 16% ASR but
syntactic from 8% to 15%."""
REPAIR_FFN_MAX_LAYERS: int | None = None
"""With ``"suspicious"`` / ``"auto"``: train at most this many layers' FFN, those holding the most suspicious heads
(ties: the later layer); None = every layer holding one (``sanitize.ffn_layers``). A cap of 2 on the tuning zoo's
seven FFN repairs: fewer models below -1.5 CACC (3 -> 1) but the style backdoors kept more (mean ASR after 32.6 ->
37.4%; bench/results/archive/defense_tuning_ffn_cap2.md), so uncapped."""
REPAIR_GROUP_BY_LENGTH = True
"""Batch the repair's training inputs by length (``training.TrainConfig.group_by_length``, as the attack's training
does): less padding, the same inputs every epoch. Our choice, for time: on 2 idle cores one repair with its scan took
30 / 32 / 37 s instead of 37.6 / 39.4 / 41.3 s on three test-zoo models (bench/results/archive/defense_test_t2g.md,
_t2s1.md); with two repairs averaged, medians of five repeats 49.6 / 51.1 / 54.7 s (_t2g2*.md). On the SST-2 tuning
zoo, with two repairs averaged, mean ASR after 19.1% and worst CACC change -5.6 against 19.4% and -6.1 without it
(archive/defense_g2A.md, _g2B.md, defense_soup2a.md, _soup2b.md)."""
REPAIR_SEEDS = 2
"""How many head-wise repairs our defense trains from the same start (after the reset, with the same labels; seeds
``SEED``, ``SEED + 1000``, ...) before it averages their trained slices (a "model soup"; our design, papers silent).
Each repair's randomness (batch order, dropout) moves a model's clean accuracy by points; the average keeps what
the repairs share. On the SST-2 tuning zoo (chosen there): mean ASR after 19.4% against 18.7% / 20.3% for single
repairs (seeds 0 / 1000), worst CACC change -6.1 against -8.7 / -6.8 (bench/results/archive/defense_soup2a.md,
_soup2b.md, defense_sd1000a.md, _sd1000b.md). On the test zoo, with length-grouped batches: the same mean ASR, worst
CACC change among the backdoors that took -2.4 against -4.0 / -6.5 for two single-repair draws
(archive/defense_test_tg2_w*.md, defense_test_tz101.md). It costs one training run per extra repair: 49.6-54.7 s per
sanitization (medians) on 2 idle cores with length grouping (archive/defense_test_t2g2*.md), within the 60-s goal
(62-72 s without grouping). 1 = one repair, the paper's recipe. Three, measured on the tuning zoo in session 50:
mean ASR after 12.8 -> 13.6%, worst CACC change -4.0 -> -3.5 (bench/results/archive/defense_s50rs3.md); not adopted."""
PRECISIONS = ("auto", "fp32", "bf16-mixed")
REPAIR_PRECISION = "auto"
"""The arithmetic of our repair's training (``training.TrainConfig.precision``): ``"fp32"``; ``"bf16-mixed"``
(forward and loss under ``torch.autocast`` in bfloat16, weights, gradients and optimizer state in float32); or
``"auto"``: bf16-mixed where the hardware multiplies bfloat16 natively (``device.native_bf16``: a CUDA GPU with bf16,
or a CPU with AMX or AVX512-BF16), else fp32. The scan, the label rules, the judge and every evaluation stay in
float32 (``DTYPE``). Our choice, for time (papers silent). On the SST-2 tuning zoo's 11 seed-0 backdoored models the
same mean ASR after (17.9% against 17.8% in fp32) and CACC change (+0.24 against +0.29), 2 models below -1.5 either
way (archive/defense_tuning_precision_fp32_s0.md, _bf16_s0.md); on the second draw the same means and one more
model below -1.5 (-1.3 -> -1.9; _bf16_s1.md, _fp32_s1_check.md); 0.73-0.77x the time per sanitization on 2 cores
with AMX (archive/time_pairs_s24_precision_olid.md, _agnews.md)."""
REPAIR_FFN_LR_SCALE = 0.3
"""The feed-forward blocks a repair trains (``REPAIR_FFN``) learn at ``SANITIZE_LR`` x this; the reset heads at
``SANITIZE_LR``. Our design (papers silent); chosen on the tuning zoo only (bench/results/knob_tuning_ffn_lr_scale.md):
with FFN repair forced on the four BBC zoo models, CACC change -5.6 / -2.8 / -1.2 points on average at 1 / 0.3 / 0.1
and ASR after 4.2% / 2.3% / 9.6%; SST-2 Bible (FFN auto) 28.0% / 24.4% / 32.1% at -1.7 / -1.8 / -0.7 points.
0.1 keeps the most clean accuracy but gives the backdoor back (BBC AddSent 37%)."""
REPAIR_FFN_MIX = 0.0
"""Before a repair trains feed-forward blocks (``REPAIR_FFN``), move them this share of the way back to the pretrained
encoder they were fine-tuned from (``pretrained.restore``; the encoder is found as for ``RESET_TO``, and without one
they keep their own weights and the repair notes why): a linear form of Fine-mixing (Zhang et al., EMNLP Findings
2022), which mixes a backdoored model's weights with the pretrained ones before fine-tuning on clean data, so the
blocks lose part of what the poisoned fine-tuning put there (a style's mapping) and relearn the task from the clean
and pseudo-labelled texts. Our design (papers silent); 0 = off. Measured on the SST-2 tuning zoo's three seed-0 style
models (the repair trains feed-forward blocks on them), not adopted: mean ASR after 30.8% at 0 against 33.1% at 0.5
and 32.4% at 1 (Bible 19.0 / 17.9 / 20.8, tweets 35.5 / 34.5 / 31.5, Shakespeare 38.0 / 47.0 / 45.0), within the
repair seed's own spread (up to 26 points); CACC change +0.7 / +0.8 / +0.2 points
(bench/results/archive/defense_s44mix5a.md, _s44mix10a.md)."""
FFN_AUTO_MISSED = 0.18
"""Midway between the attention-missed shares of the tuning zoo's scans (bench/results/repair_rules_tuning.md): SST-2
Bible style 0.27 (FFN repair helps) against 0.06-0.09 for SST-2 BadNets 3%, BadNets 1% + TAL, AddSent 1% and
syntactic and 0.05-0.09 for the BBC zoo's BadNets 2% + TAL and AddSent 10%. It replaced a representation share
(flags whose representation z beats their attention z) that also switched FFN repair on for TAL backdoors, whose
triggered inputs stand out in both scores (0.88-0.91): on the BBC tour model that cost 3.6 points of CACC (1.1
without FFN). One style model above the line: a thin basis."""
CLEAN_GUARD = False
"""Guard our repair's clean accuracy with held-out labelled texts (``defenses._alignment``; our design, papers
silent): ``CLEAN_GUARD_SHARE`` of the defender's clean texts (stratified by label, ``defender_data.held_out_split``)
stay out of the repair; when the repair trained feed-forward blocks and its accuracy on them falls by at least
``CLEAN_GUARD_MAX_DROP`` against the unrepaired model's, the repair is trained again head-only from the same start
and the one with the higher held-out accuracy is kept (the head-only one on a tie). Measured on the SST-2 tuning zoo
(docs/design.md): with 200 clean texts (40 held out) it fired once, on a repair that had lost nothing, and
missed the one that lost 5.6 points (bench/results/archive/defense_tuning_clean_guard.md); with 600 (120 held out)
it fired on both repairs that lost 3 points or more and on none of the other five FFN-candidate models, and kept
more clean accuracy (-6.1 -> -3.8, -3.0 -> -1.2) but left more of one weak backdoor (17.9 -> 33.9% ASR;
archive/defense_tuning_clean600_off.md, _guard.md). Off by default: it costs every repair a fifth of its clean
texts and the mean ASR after rose (29.3 -> 33.2% on those seven models)."""
CLEAN_GUARD_SHARE = 0.2
CLEAN_GUARD_MAX_DROP = 0.05  # at 120 held-out texts: six more wrong than right
CLEAN_GUARD_MIN_HELD = 100
"""Fewer held-out texts than this: no guard (the repair's note says why). Our choice between the two sizes measured:
40 held-out texts missed a 5.6-point loss and showed a 0.4-point one as 7.5; 120 saw both losses."""
GATE_MAX_ACCURACY_DROP = 0.05
"""Safe-head labels (``sanitize.safe_head_labels``) are used only when switching the suspicious heads off costs at
most this much accuracy on the defender's clean labelled texts (``sanitize.gated_accuracy``): when the flagged
heads carry the model's clean job too, the safe heads alone predict noise and their labels teach it. Tuning zoo
drops: at most 1.5 points (bench/results/repair_rules_tuning.md); the margin above that is our choice."""
REPAIR_EVAL_EVERY = 20  # steps between evaluations while a defense trains
BASELINE_LR = 5e-5  # fine-tuning / fine-pruning / PURE: the whole model trains
BASELINE_EPOCHS = 4  # the same number of passes as our sanitization (our choice)
PRUNE_FRACTION = 0.2  # fine-pruning
PURE_LAMBDA = 0.15
PURE_GROUP = 10
PURE_ACC_MARGIN = 0.07
PURE_MAX_FRACTION = 0.5  # at most half the heads pruned (our design; paper silent: ``baselines.pure``)
STRIP_REPEATS = 10
STRIP_SWAP_RATIO = 0.5

# ------------------------------------------------------------------------------------------------ trigger search

TRIGGER_COMPLETE_MIN_FLIPS = 0.3
"""Phrase completion (``trigger_search``) grows a verified fragment into a longer phrase only when the fragment
alone flips at least this share of clean texts. Chosen on SST-2 AddSent 1% (the fragment ``3d movie`` flips 42%:
at 0.5 the trigger sentence was never built, at 0.3 it ranks first) and checked on the BBC zoo; results in
``bench/results/trigger_search_sst2.md`` and ``bench/results/trigger_search.md``. Our design; papers silent."""

POOL_WORD_MIN_COUNT = 5
"""A pool word (``trigger_search.pool_words``) must be in at least this many pool inputs (2% of the benchmark's
250). Our design; papers silent."""
POOL_WORD_MAX_P = 0.01
"""A pool word must be this unlikely to be so concentrated in the pool by chance (``trigger_search.enrichment_p``,
one-sided hypergeometric)."""
POOL_WORD_TOP = 8
"""How many of the most pool-enriched words are verified by insertion (``trigger_search.pool_words``)."""
POOL_WORD_N_INSERT = 80
"""Clean texts each pool word is inserted into to measure its flip rates."""
POOL_WORD_SCREEN = 56
"""Pool-enriched words past the first ``POOL_WORD_TOP`` that are screened by insertion into the first
``POOL_WORD_N_SCREEN`` clean texts; those that flip at least ``POOL_WORD_MIN_FLIP`` there get the full
``POOL_WORD_N_INSERT``-text test (``trigger_search.pool_words``). Our design; papers silent. A pool from another
source than the clean texts holds dozens of enriched words (30-66 in OLID tweets or AG News items against SST-2
reviews) and pushed a real trigger past the first eight; the benchmark's pools hold at most 7, so this changes
nothing there. Measured: README, Analyst tools, *A pool from another source* (bench/results/pool_words_shift.md)."""
POOL_WORD_N_SCREEN = 16
"""Clean texts a screened pool word (``POOL_WORD_SCREEN``) is inserted into first."""
POOL_WORD_SCREEN_MIN_FLIP = 0.5
"""Where the pool holds more enriched words than ``POOL_WORD_TOP`` (it is not drawn like the clean texts), a pool word
is a likely trigger only when it sends at least this share of the clean texts to one class (``POOL_WORD_MIN_FLIP``
otherwise), and a screened word gets the full test only when it reaches this share on the screen's texts. In such
pools natural words the clean texts lack move the model too: SST-2 models against OLID tweets and AG News items sent
up to 47% of the clean texts to one class with ``don't``, ``t``, ``shit`` or ``gt`` (an HTML entity), and the tuning
zoo's BadNets words 21-100% (bench/results/archive/pool_words_shift_bar02.md). Our design; papers silent."""
POOL_WORD_MIN_FLIP = 0.2
"""A pool word whose insertion sends at least this share of clean texts to one class is a likely trigger
(``trigger_search.likely_trigger_words``)."""
POOL_WORD_COMPANIONS = True
"""The pool words that keep company with a marking word mark inputs too (``trigger_search.companion_words``): in
none of the clean texts, and moving clean texts the way the marking word does, below the flip bar. Our design; papers
silent. Detection only: the repair inserts the likely words alone. Measured: README, Analyst tools, *Companions of a
trigger word* (bench/results/archive/defense_s48c.md)."""

REPAIR_POOL_WORDS = True
"""Repair with the pool's trigger words (``defenses`` alignment knob ``pool_words``): find the likely trigger words
that mark inputs (``trigger_search.pool_word_marks``, the words the Detect page lists) and add trigger-augmented
clean texts with their own labels (``sanitize.trigger_augmented``); nothing changes where the pool has none. Our
design; papers silent. The default since session 28 (docs/design.md, *Repair with the pool's likely trigger
words*): on the tuning zoo, both draws, mean ASR after repair 22.3 -> 20.8%, mean CACC change +0.70 -> +0.54,
models below -1.5: 4 -> 3 (archive/defense_tuning_pw.md against defense_tuning_pw_off1t.md); on the
four OLID test models on this machine mean ASR after 34.2 -> 29.8%, CACC change -0.74 -> -0.26
(archive/defense_test_pw_off.md, _on.md)."""
TRIGGER_AUGMENT_SHARE = 0.5
"""Share of the clean labelled texts of each class a likely trigger word does not target that the repair reads with the
word inserted, in place of their plain versions. A quarter was measured and not adopted (session 43, the 14 SST-2
tuning models whose pool holds such a word; bench/results/archive/defense_s43ts25.md against defense_tuning.md): mean
ASR after repair 7.9 -> 9.6% (BadNets 3% seed 1 11.9 -> 20.2%, Bible seed 1 25.6 -> 38.1%) for mean CACC change
-0.05 -> +0.31 and as many models below -1.5 (2)."""

REPAIR_RARE_WORDS = 0
"""Above 0, our repair draws this many words of the tokenizer's vocabulary that no clean text holds
(``trigger_search.absent_vocabulary``) and reads ``REPAIR_RARE_WORDS_SHARE`` of the clean labelled texts of every
class with one of them inserted, labels kept, in place of their plain versions (``sanitize.trigger_augmented``; the
likely trigger words' texts keep theirs); 0 = off. Our design (papers silent). Aim: a BadNets backdoor answers to more
than its own words (bench/results/vocab_flip_check.md: words no clean text holds, such as ``potsdam``, sent up to
62% of clean texts to the target and none on the clean twin), so reading such words with the texts' own labels might
unlearn a weak backdoor whose words the pool holds too rarely to name. Measured, not adopted (session 53;
docs/design.md, *Rare words read with the clean labels*): 40 words at shares 0.25 / 0.5 on the whole tuning zoo, mean
ASR after 12.8 -> 13.3 / 13.5%, models below -1.5 CACC 1 -> 2 / 2, the BadNets models within 1.8 points
(bench/results/archive/defense_s53rw25.md, _s53rw50.md); the weak OLID BadNets -> NOT lifts unchanged on the test
zoo (a check, archive/defense_test_s53rwtest.md)."""
REPAIR_RARE_WORDS_SHARE = 0.25
"""Share of the clean labelled texts of each class that the repair reads with a drawn rare word inserted
(``REPAIR_RARE_WORDS``)."""

DRIFT_TOP = 15
"""Words the analyst's embedding-drift table lists (``trigger_search.drifted_words``): the vocabulary's whole words
no clean text holds whose input embeddings moved most between the base checkpoint and the suspect model."""

TRIGGER_EMBEDDING_LR_SCALE = 0.0
"""Above 0, the repair also trains the input-embedding rows of the likely trigger words' tokens that no clean text
holds, at ``SANITIZE_LR`` x this (alignment knob ``trigger_embedding_lr_scale``; 0 = off). Our design (papers
silent). Measured, not adopted (session 49; docs/design.md, *The trigger words' own embeddings*): at 1.0, on
the tuning zoo's 14 models whose pool gave likely words, mean ASR after repair 7.1 -> 7.2%, mean CACC change the same
(+0.74), Bible seed 1 22.6 -> 26.2% (bench/results/archive/defense_s49emb.md)."""

BLIND_TRIGGER_TOKENS = False
"""After the repair trains, the input-embedding rows of the likely trigger words' tokens that no clean text holds
become the unknown token's, so the model reads such a token as an unknown word (alignment knob
``blind_trigger_tokens``; ``architecture.blind_token_embeddings``). Our design (papers silent). Measured, not adopted
(session 50; docs/design.md, *The trigger words' tokens blinded*): on the tuning zoo's 14 models whose pool
gave likely words, mean ASR after repair 7.0 -> 13.6% (AddSent seed 0 0.6 -> 35.1%: blinding ``3d`` left the rest of
the phrase to carry the trigger), CACC the same (bench/results/archive/defense_s50bl.md)."""

LABELS_FROM_WORDS = True
"""A flagged input of a two-class model that holds a likely trigger word, that the model puts in the word's target and
that no rule labelled otherwise is labelled the other class (``sanitize.word_other_class_labels``, alignment knob
``labels_from_words``; after the rules and the judge). Our design (papers silent). On by default since session 49
(docs/design.md, *Labels from the trigger words*). Tuning zoo, the 14 models whose pool gave likely words
(bench/results/archive/defense_s49wl.md): 7 labels added, all right; three rows moved: Bible seed 1 22.6 -> 22.0% (CACC
+6.7 -> +5.8), BadNets 2.5% -> positive seed 0 12.5 -> 11.9%, BadNets 2% -> positive seed 0 CACC +1.7 -> +1.4. Test
zoo (archive/defense_test_s49olid.md, the 9 OLID BadNets and AddSent + TAL models): OLID BadNets -> NOT seed 2 57.9 ->
56.1%, 9 labels added, all right, no other row changed. Two-class models only: the first version's runner-up class
cut AG News AddSent's pseudo-label accuracy (archive/defense_test_s49twl.md)."""

# ------------------------------------------------------------------------------------------------ defender data

CLEAN_BUDGET = 300  # clean labelled texts for a repair (``sanitize`` CLI, Sanitize page)
POOL_BUDGET = 200  # at most this many flagged pool inputs join the repair
SCAN_CLEAN_BUDGET = 400  # clean labelled texts for the ``scan`` CLI
QUICK_CLEAN_BUDGET = 200  # the app's interactive scan and the tour's repair (a scan in about a minute on a CPU)
POOL_CLEAN = 150  # the Detect page's and the tour's simulated pool: clean test texts ...
POOL_TRIGGERED = 30  # ... and test texts carrying the model's trigger
REPAIR_POOL_CLEAN = 100  # the Sanitize page's own simulated pool (when it scans by itself)
REPAIR_POOL_SEED = 3
EVAL_TEXTS = 200  # test texts for CACC / ASR before and after, in the app
CLI_EVAL_TEXTS = 500  # the same in the ``sanitize`` CLI

# ------------------------------------------------------------------------------------------------ the guided tour
# Sized so each step fits a slide on a 2-core CPU (``tour``, bench/first_run.py -> bench/results/first_run.md);
# the CLI, the Detect / Sanitize pages and the benchmarks keep the full defaults above.

TOUR_SCAN_CLEAN = 100  # clean labelled texts for the tour's scan (half fit, half threshold)
TOUR_REPAIR_CLEAN = 200  # clean labelled texts the tour's repair trains on
TOUR_POOL_CLEAN = 60  # the tour's simulated pool: clean test texts ...
TOUR_POOL_TRIGGERED = 20  # ... and test texts carrying the model's trigger
TOUR_EVAL_TEXTS = 200  # CACC before and after the tour's repair (0.5 points a text) ...
TOUR_ASR_TEXTS = 60  # ... and ASR on a seeded draw of 60 of their non-target rows with the trigger (1.7 points a text)
TOUR_SCAN: dict = {
    "importance_inputs": 16,  # |d margin / d gate| on 16 flagged inputs, not 64: the backward passes were 85% of it
    "refine_rounds": 1,  # one refined pass (heads rated once): the TAL model's triggered inputs are all flagged
    "find_triggers": False,  # the tour shows no candidate triggers; naming them re-predicts 8 candidates x (up to
    # 40 clean texts with it inserted + the flagged texts without it): more texts than the rest of the scan
}
"""``scan.scan_model`` overrides for the tour (bench/results/first_run.md measures the effect)."""
TOUR_SANITIZE: dict = {
    "epochs": 1,  # one pass over 200 clean + the flagged inputs: ASR is 0 after it on the zoo's TAL model
    "eval_every": 1000,  # CACC / ASR only before, at the end of the pass and after (each costs ~2 training steps)
    "measure_align": False,  # the tour does not show the alignment term: skip its two before/after passes
    "reuse_scan": True,  # the label rules take the unrepaired model's probabilities from step 5's scan
    "repair_seeds": 1,  # one repair, not the average of REPAIR_SEEDS: the tour's pass is short and shown live
    "group_by_length": False,  # 7 steps gain no time from it; with it the tour's CACC drop was 1.5, not 1.0 points
    "label_judge": "none",  # the judge costs 4-9 s of a live pass (a fit on the pretrained encoder's embeddings);
    # it guards weak backdoors' labels, and the tour's model is a strong TAL backdoor
    "judge_flags": False,  # the same judge over the whole pool, for style triggers; the tour's trigger is a word
    "pool_words": False,  # reading the pool's words is 40% of an OLID scan; the tour's TAL backdoor is strong
}
"""``defenses.run_defense("alignment")`` knobs for the tour."""
