# The alignment pipeline. `make all` runs the chain on the embedded default world; `make test` runs the tests.
# Paths live here; knobs live in configs/$(SCALE)/<stage>.yaml. Every stage target is its DONE file.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

SCALE ?= tiny
CFG   := configs/$(SCALE)
RUNS  ?= runs/$(SCALE)
VENV  := .venv
PY    := $(VENV)/bin/python
ARGS  ?=
# ARGS reach only the stage named on the command line (`make sft ARGS=train.epochs=1`), never the
# prerequisites make rebuilds on the way: their configs have other keys.
args = $(if $(filter $(1),$(MAKECMDGOALS)),$(ARGS))

export TOKENIZERS_PARALLELISM := false
export GRADIO_ANALYTICS_ENABLED := False
# Answers a model already gave (same weights, numerics, prompts, seeds) are read back, not generated again: SFT's
# answers serve the reward stage's best-of-n, DPO's, PPO's and RLOO's own lines and the report (core/answer_cache.py).
export ANSWER_CACHE := $(RUNS)/answers
# tcmalloc makes small-model CPU training 10-30 % faster (allocator churn) and generation ~12 %; every stage that
# runs a model uses it when present.
# Looked up by the shell when a recipe runs, not when make reads this file: on a fresh machine the first `make all`
# installs it (make install) before its first training stage, and that stage already gets it. Empty when missing.
TCMALLOC = $$(ls /usr/lib/*/libtcmalloc_minimal.so.4 2>/dev/null | head -1)
TORCH_PY = LD_PRELOAD=$(TCMALLOC) $(PY)
# Training stages on many devices: `make sft NPROC=8` runs `accelerate launch` with configs/accelerate/$(DIST).yaml
# (DIST=ddp | fsdp | zero2 | zero3). Batch sizes in the configs are per process.
NPROC ?= 1
DIST  ?= ddp
LAUNCH = $(if $(filter 1,$(NPROC)),$(TORCH_PY),LD_PRELOAD=$(TCMALLOC) $(VENV)/bin/accelerate launch \
	--config_file configs/accelerate/$(DIST).yaml --num_processes $(NPROC))

ifeq ($(SCALE),tiny)
# The tiny default never touches a hub: fail loudly instead of downloading.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
endif

# Training data. The default world everywhere except SCALE=gpu, which reads hub datasets (hf:name[:config][@split];
# their columns are mapped in configs/gpu/*.yaml). Preference pairs from a hub replace the exported labels.
ifeq ($(SCALE),gpu)
CORPUS      ?= hf:HuggingFaceFW/fineweb-edu:sample-10BT@train[:1%]
HELDOUT     ?= hf:HuggingFaceFW/fineweb-edu:sample-10BT@train[9600000:9602000]
SFT_DATA    ?= hf:HuggingFaceH4/ultrachat_200k@train_sft
PREFS_TRAIN ?= hf:HuggingFaceH4/ultrafeedback_binarized@train_prefs
PREFS_TEST  ?= hf:HuggingFaceH4/ultrafeedback_binarized@test_prefs
PROMPTS     ?= hf:HuggingFaceH4/ultrafeedback_binarized@train_prefs
EVAL_PROMPTS ?= hf:HuggingFaceH4/ultrafeedback_binarized@test_prefs
JUDGE       ?= $(RUNS)/reward/model
endif
CORPUS      ?= $(RUNS)/world/corpus.jsonl
HELDOUT     ?= $(RUNS)/world/corpus_heldout.jsonl
SFT_DATA    ?= $(RUNS)/world/sft.jsonl
PREFS_TRAIN ?= $(RUNS)/prefs/train.jsonl
PREFS_TEST  ?= $(RUNS)/prefs/test.jsonl
# Prompts to label and to roll out on (seed, ppo, rloo); columns mapped by prompt_source in their configs.
PROMPTS     ?= $(RUNS)/world/prompts_train.jsonl
# The report card's and the arena's prompts and, unless its config says scripted, the report's judge (configs/*/eval.yaml).
EVAL_PROMPTS ?= $(RUNS)/world/prompts_heldout.jsonl
JUDGE       ?=
PREFS_DONE  := $(if $(filter hf:%,$(PREFS_TRAIN)),,$(RUNS)/prefs/DONE)

.PHONY: gpu-check bench-control bench-seeds bench-active round round-train report help install tcmalloc chromium postgres all world pretrain sft sample inspect seed label label-auto export user reward dpo ppo rloo align test bench \
	bench-label bench-playground arena-seed arena-auto eval clean distclean

help: ## list the targets, grouped
	@awk -F':.*## ' '/^##@ /{printf "\n%s\n", substr($$0, 5)} /^[a-z-]+:.*## /{printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "  (SCALE=tiny|gpu picks configs/<scale>/ and runs/<scale>/; ARGS='train.max_steps=10' overrides knobs of the stage you name;"
	@echo "   NPROC=8 DIST=ddp|fsdp|zero2|zero3 runs training stages under accelerate launch; DB=postgresql://... for a team's label store)"

##@ Set-up (make all and make test run what they need themselves)
install: $(VENV)/.installed ## create .venv and install the pinned dependencies

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(VENV)/bin/pip install -q -e ".[test]" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	@$(MAKE) --no-print-directory tcmalloc
	touch $@

tcmalloc: ## install Debian's tcmalloc if missing (optional speed-up; skipped without root/apt)
	@ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq libtcmalloc-minimal4 || { apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4; }) >/dev/null 2>&1 \
		|| echo "note: could not install libtcmalloc-minimal4; training runs without it (slower)"; \
	else echo "note: libtcmalloc-minimal4 not installed (needs root + apt); training runs without it (slower)"; fi

chromium: ## install Debian's chromium for the browser tests if missing (needs root + apt)
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq chromium chromium-driver || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }) >/dev/null 2>&1; \
	fi; command -v chromium >/dev/null || { echo "error: chromium is missing and could not be installed: apt-get install chromium chromium-driver" >&2; exit 1; }

postgres: ## install Debian's postgresql if missing (the store's PostgreSQL tests start their own server; needs root + apt)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq postgresql || { apt-get update -qq && apt-get install -y -qq postgresql; }) >/dev/null 2>&1; \
	fi; ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "error: postgresql is missing and could not be installed: apt-get install postgresql" >&2; exit 1; }

##@ The chain (make all runs world -> pretrain -> sft -> seed -> label-auto -> export -> reward, dpo, ppo -> arena -> eval)
all: $(RUNS)/eval/DONE ## run the whole chain on the default world, then print what it found
	@$(PY) -m rlhf.report --runs $(RUNS) --eval $(RUNS)/eval --summary

# A stage reruns when its config's settings change, not when only its comments or layout do: it depends on
# $(SET)/<config>.json, the parsed settings, which core/config.py rewrites only when they differ.
SET := $(RUNS)/.settings
$(SET)/%.json: $(CFG)/%.yaml | $(VENV)/.installed
	@$(PY) -m core.config $< $@

world: $(RUNS)/world/DONE ## generate the default world (corpus, prompts, SFT demos)
$(RUNS)/world/DONE: $(SET)/world.json core/world.py pretrain/world.py | $(VENV)/.installed
	$(PY) -m pretrain.world --config $(CFG)/world.yaml --out $(RUNS)/world $(call args,world)

pretrain: $(RUNS)/pretrain/DONE ## train the tokenizer and the base model (resumes after a crash)
$(RUNS)/pretrain/DONE: $(RUNS)/world/DONE $(SET)/pretrain.json pretrain/train.py core/model.py core/onednn.py core/precision.py core/tokenizer.py
	$(LAUNCH) -m pretrain.train --config $(CFG)/pretrain.yaml --corpus "$(CORPUS)" \
		--heldout "$(HELDOUT)" --probe-prompts $(RUNS)/world/prompts_heldout.jsonl \
		--out $(RUNS)/pretrain $(call args,pretrain)

# Annotators' corrections join the demonstrations when asked for (`make sft WITH_CORRECTIONS=1` after
# `make export`). Not by default: corrections come from labeling the SFT policy's own outputs, so
# feeding them back into `make all` would make every run start another labeling round.
WITH_CORRECTIONS ?= 0
CORRECTIONS := $(if $(filter 1,$(WITH_CORRECTIONS)),$(RUNS)/prefs/corrections.jsonl)
$(RUNS)/prefs/corrections.jsonl:
	@echo "error: $@ is missing: label (make label or make label-auto), then make export" >&2; exit 2
sft: $(RUNS)/sft/DONE ## supervised fine-tuning on the chat demonstrations (full or LoRA; resumes; WITH_CORRECTIONS=1)
$(RUNS)/sft/DONE: $(RUNS)/pretrain/DONE $(SET)/sft.json sft/train.py core/generation.py core/onednn.py core/precision.py core/training.py $(CORRECTIONS)
	$(LAUNCH) -m sft.train --config $(CFG)/sft.yaml --model $(RUNS)/pretrain/model --data "$(SFT_DATA)" \
		--heldout-prompts $(RUNS)/world/prompts_heldout.jsonl --out $(RUNS)/sft --corpus "$(CORPUS)" \
		$(if $(CORRECTIONS),--corrections $(CORRECTIONS)) $(call args,sft)

STAGE  ?= sft
PROMPT ?= Tell me a story about Tom, a dog and the park.
##@ Look inside a model
sample: $(VENV)/.installed ## print completions of STAGE's model for PROMPT (ARGS='--temperature 0.8 -n 3 --show-top 10')
	$(PY) -m tools.sample --model $(RUNS)/$(STAGE)/model --prompt "$(PROMPT)" $(if $(filter pretrain,$(STAGE)),--raw) $(ARGS)

TEXT ?= Tom has a red ball. Tom went to the park with
inspect: $(VENV)/.installed ## tokens, next-token probabilities, loss of STAGE's model on TEXT (ARGS='--temperature 0.7 --steps 5')
	$(PY) -m tools.inspect_model --model $(RUNS)/$(STAGE)/model --text "$(TEXT)" $(ARGS)

# The Playground tab shows every stage that has finished (base = the pretrained model).
PLAYGROUND := $(foreach s,pretrain sft dpo ppo rloo,$(if $(wildcard $(RUNS)/$(s)/DONE),--model $(subst pretrain,base,$(s))=$(RUNS)/$(s)/model))

# ---------------------------------------------------------------- labeling
# Labels live in data/ (never under runs/, so `make clean` keeps them).
DB    ?= data/labels_$(SCALE).db
LABEL := $(CFG)/label.yaml
# Seeding is one labeling round for the policy at hand: it needs an SFT model (order-only), but a
# retrained SFT does not silently start a new round; `rm $(RUNS)/seed/DONE && make seed` does.
REWARD_MODEL := $(wildcard $(RUNS)/reward/model/config.json)
SEED_MODEL ?= $(RUNS)/sft/model
##@ Labeling
seed: $(RUNS)/seed/DONE ## generate k candidates per training prompt from the SFT policy into the label store
$(RUNS)/seed/DONE: $(SET)/label.json labeling_ui/seed.py labeling_ui/store.py | $(RUNS)/sft/DONE
	$(TORCH_PY) -m labeling_ui.seed --config $(LABEL) --model $(SEED_MODEL) --prompts "$(PROMPTS)" \
		--db $(DB) --out $(RUNS)/seed $(if $(REWARD_MODEL),--reward-model $(RUNS)/reward/model) $(call args,seed)

label: $(RUNS)/seed/DONE ## start the labeling app on app.host:app.port (create accounts with make user)
	$(PY) -m labeling_ui.app --config $(LABEL) --db $(DB) --export-out $(RUNS)/prefs $(PLAYGROUND) $(call args,label)

NAME ?=
ROLE ?= annotator
USER_DO = $(or $(DO),$(if $(filter 1,$(UNLOCK)),unlock,add))
user: $(VENV)/.installed ## labeling accounts: make user NAME=alice ROLE=annotator|admin creates one (asks for the password); DO=passwd|role|remove|unlock changes one
	@test -n "$(NAME)" || { echo "error: give the account a name: make user NAME=alice ROLE=annotator" >&2; exit 2; }
	$(PY) -m labeling_ui.users --db $(DB) $(USER_DO) "$(NAME)" $(if $(filter add role,$(USER_DO)),--role $(ROLE))

label-auto: $(RUNS)/label-auto/DONE ## the automatic annotators (auto.judge in label.yaml) judge every seeded item (no human needed)
$(RUNS)/label-auto/DONE: $(RUNS)/seed/DONE labeling_ui/auto.py core/annotator.py
	$(PY) -m labeling_ui.auto --config $(LABEL) --db $(DB) --out $(RUNS)/label-auto $(call args,label-auto)

EXPORT = $(PY) -m labeling_ui.export --config $(LABEL) --db $(DB) --out $(RUNS)/prefs $(call args,export)
$(RUNS)/prefs/DONE: $(RUNS)/label-auto/DONE labeling_ui/export.py labeling_ui/pairs.py
	$(EXPORT)
export: $(VENV)/.installed ## write preference pairs + corrections from the label store (always re-exports)
	$(EXPORT)

# ---------------------------------------------------------------- alignment
##@ Reward model and alignment
reward: $(RUNS)/reward/DONE ## train the reward model on the exported preference pairs (starts from the SFT model)
$(RUNS)/reward/DONE: $(PREFS_DONE) $(RUNS)/sft/DONE $(SET)/reward.json reward/train.py core/reward.py core/training.py
	$(LAUNCH) -m reward.train --config $(CFG)/reward.yaml --model $(RUNS)/sft/model --train "$(PREFS_TRAIN)" \
		--test "$(PREFS_TEST)" --heldout-prompts $(RUNS)/world/prompts_heldout.jsonl --out $(RUNS)/reward \
		$(call args,reward)

dpo: $(RUNS)/dpo/DONE ## align the SFT policy with DPO on the preference pairs; reports win rate vs SFT, KL, diversity
$(RUNS)/dpo/DONE: $(PREFS_DONE) $(RUNS)/sft/DONE $(SET)/dpo.json rlhf/dpo.py core/compare.py core/training.py core/reward.py
	$(LAUNCH) -m rlhf.dpo --config $(CFG)/dpo.yaml --model $(RUNS)/sft/model --train "$(PREFS_TRAIN)" --test "$(PREFS_TEST)" \
		--heldout-prompts $(RUNS)/world/prompts_heldout.jsonl --out $(RUNS)/dpo $(call args,dpo)

ppo: $(RUNS)/ppo/DONE ## align the SFT policy with PPO against the reward model (own PPO; KL and length guards)
$(RUNS)/ppo/DONE: $(RUNS)/reward/DONE $(RUNS)/sft/DONE $(SET)/ppo.json rlhf/ppo.py core/ppo_math.py core/compare.py core/onednn.py core/precision.py core/training.py
	$(LAUNCH) -m rlhf.ppo --config $(CFG)/ppo.yaml --model $(RUNS)/sft/model --reward-model $(RUNS)/reward/model \
		--prompts "$(PROMPTS)" --heldout-prompts $(RUNS)/world/prompts_heldout.jsonl \
		--out $(RUNS)/ppo $(call args,ppo)

rloo: $(RUNS)/rloo/DONE ## critic-free alignment against the reward model with TRL (method: rloo | grpo)
$(RUNS)/rloo/DONE: $(RUNS)/reward/DONE $(RUNS)/sft/DONE $(SET)/rloo.json rlhf/rloo.py core/compare.py core/training.py
	$(LAUNCH) -m rlhf.rloo --config $(CFG)/rloo.yaml --model $(RUNS)/sft/model --reward-model $(RUNS)/reward/model \
		--prompts "$(PROMPTS)" --heldout-prompts $(RUNS)/world/prompts_heldout.jsonl \
		--out $(RUNS)/rloo $(call args,rloo)

align: $(RUNS)/reward/DONE $(RUNS)/dpo/DONE $(RUNS)/ppo/DONE ## reward model, DPO and PPO (make rloo for RLOO/GRPO)

# ---------------------------------------------------------------- evaluation
# The arena: base (the pretrained model), SFT and the aligned models answer the same held-out prompts.
ARENA_MODELS = --model base=$(RUNS)/pretrain/model --model sft=$(RUNS)/sft/model --model dpo=$(RUNS)/dpo/model \
	--model ppo=$(RUNS)/ppo/model $(if $(wildcard $(RUNS)/rloo/DONE),--model rloo=$(RUNS)/rloo/model)
##@ Evaluation
arena-seed: $(RUNS)/arena-seed/DONE ## the models answer the same held-out prompts, for blind votes in the app's Arena tab
$(RUNS)/arena-seed/DONE: $(RUNS)/pretrain/DONE $(RUNS)/sft/DONE $(RUNS)/dpo/DONE $(RUNS)/ppo/DONE labeling_ui/arena.py \
		$(wildcard $(RUNS)/rloo/DONE)
	$(TORCH_PY) -m labeling_ui.arena seed --config $(LABEL) --db $(DB) --prompts "$(EVAL_PROMPTS)" \
		--out $(RUNS)/arena-seed $(ARENA_MODELS) $(call args,arena-seed)

arena-auto: $(RUNS)/arena-auto/DONE ## the automatic annotators (auto.judge in label.yaml) vote in the arena (no human needed)
$(RUNS)/arena-auto/DONE: $(RUNS)/arena-seed/DONE
	$(PY) -m labeling_ui.arena auto --config $(LABEL) --db $(DB) --out $(RUNS)/arena-auto $(call args,arena-auto)

# The votes file is rewritten only when the votes changed, so the report is rebuilt only then.
ARENA_EXPORT = $(PY) -m labeling_ui.arena export --config $(LABEL) --db $(DB) --out $(RUNS)/arena
$(RUNS)/arena/votes.jsonl: $(RUNS)/arena-auto/DONE
	$(ARENA_EXPORT)

EVAL_DONE := $(RUNS)/eval/DONE
# A finished RLOO joins the report: `make rloo && make eval` reruns it (the other models' answers come from the cache).
$(EVAL_DONE): $(RUNS)/arena/votes.jsonl $(RUNS)/reward/DONE $(RUNS)/dpo/DONE $(RUNS)/ppo/DONE $(SET)/eval.json \
		rlhf/evaluate.py rlhf/report.py core/compare.py core/ratings.py $(wildcard $(RUNS)/rloo/DONE)
	$(TORCH_PY) -m rlhf.evaluate --config $(CFG)/eval.yaml --runs $(RUNS) --world $(RUNS)/world --votes $(RUNS)/arena/votes.jsonl \
		--prompts "$(EVAL_PROMPTS)" --out $(RUNS)/eval $(if $(JUDGE),judge.path=$(JUDGE)) $(call args,eval $(EVAL_DONE))
eval: $(RUNS)/arena-auto/DONE ## the report card: every model vs SFT, reward model, arena ratings, curves, provenance
	$(ARENA_EXPORT)
	@$(MAKE) --no-print-directory $(EVAL_DONE)
report: $(VENV)/.installed ## re-render the report card from eval's figures and the current arena votes (no models loaded)
	@test -f $(RUNS)/eval/metrics.json || { echo "error: $(RUNS)/eval/metrics.json: nothing measured yet; run make eval" >&2; exit 2; }
	$(ARENA_EXPORT)
	$(PY) -m rlhf.report --runs $(RUNS) --eval $(RUNS)/eval --votes $(RUNS)/arena/votes.jsonl

# ---------------------------------------------------------------- rounds: label -> align -> relabel
# A round seeds new candidates from the newest aligned policy (or POLICY=dpo|ppo|rloo), gets them labeled,
# and retrains the reward model, DPO and PPO on every round's labels; the report gains a row per round.
POLICY ?=
AUTO   ?= 0
NEWEST_POLICY = $(if $(POLICY),$(RUNS)/$(POLICY),$(patsubst %/DONE,%,$(firstword $(shell ls -t $(wildcard \
	$(RUNS)/dpo/DONE $(RUNS)/ppo/DONE $(RUNS)/rloo/DONE) 2>/dev/null))))
##@ More rounds
round: $(RUNS)/eval/DONE ## one more labeling round from the newest aligned policy; AUTO=1: scripted labels, retrain, eval
	@test -f "$(NEWEST_POLICY)/DONE" || { echo "error: no finished aligned policy $(or $(NEWEST_POLICY),under $(RUNS)): run make all (or make $(or $(POLICY),dpo))" >&2; exit 2; }
	rm -f $(RUNS)/seed/DONE $(RUNS)/label-auto/DONE
	@$(MAKE) --no-print-directory $(RUNS)/seed/DONE SEED_MODEL=$(NEWEST_POLICY)/model
ifeq ($(AUTO),1)
	@$(MAKE) --no-print-directory eval SEED_MODEL=$(NEWEST_POLICY)/model
else
	@echo "Round seeded from $(NEWEST_POLICY). Label it in the app (make label), then: make round-train"
endif

round-train: $(VENV)/.installed ## after labeling a round in the app: export all rounds' labels, retrain reward/DPO/PPO, eval
	$(EXPORT)
	@$(MAKE) --no-print-directory eval -o $(RUNS)/label-auto/DONE -o $(RUNS)/seed/DONE

##@ Test and benchmark
test: $(VENV)/.installed chromium postgres ## run all tests (unit, stage smoke, end-to-end, browser)
	$(PY) -m pytest

bench: $(VENV)/.installed ## print the speed tables: pretraining step per numerics path vs a minimal GPT loop; generation per path
	$(PY) -m bench.pretrain_step --tcmalloc "$(TCMALLOC)"
	$(PY) -m bench.generation --model $(RUNS)/sft/model --prompts $(RUNS)/world/prompts_heldout.jsonl

# Engines that need GPUs (FSDP and DeepSpeed run as plain DDP on CPU): the micro chain's training stages once per
# configs/accelerate file, on every GPU of the machine, then a verdict per engine and stage (tools/gpu_check.py).
GPUS ?= $(shell nvidia-smi -L 2>/dev/null | wc -l)
GPU_CHECK := runs/gpu-check
##@ Scale up
gpu-check: $(VENV)/.installed ## on a GPU machine: pretrain/SFT/reward/DPO/PPO (micro) under DDP and FSDP, all but PPO under ZeRO-2/3
	@test "$(GPUS)" -ge 1 || { echo "error: make gpu-check needs GPUs (nvidia-smi lists none): run it on a GPU machine" >&2; exit 2; }
	$(VENV)/bin/pip install -q deepspeed
	rm -rf $(GPU_CHECK)
	@for d in ddp fsdp zero2 zero3; do \
		$(MAKE) --no-print-directory $(GPU_CHECK)/$$d/dpo/DONE $(GPU_CHECK)/$$d/$$(case $$d in zero*) echo reward;; *) echo ppo;; esac)/DONE \
			SCALE=micro RUNS=$(GPU_CHECK)/$$d DB=$(GPU_CHECK)/$$d/labels.db \
			LAUNCH="$(VENV)/bin/accelerate launch --config_file configs/accelerate/$$d.yaml --num_processes $(GPUS)" \
			|| echo "gpu-check: $$d stopped; the verdict below says where"; \
	done
	$(PY) -m tools.gpu_check $(GPU_CHECK)

##@ More benchmarks
bench-playground: $(VENV)/.installed ## print the Playground's response time per interaction (on the finished stages' models)
	@test -n "$(PLAYGROUND)" || { echo "error: no finished stage under $(RUNS): run make sft first" >&2; exit 2; }
	$(PY) -m bench.playground --config $(LABEL) $(subst --model ,--model=,$(PLAYGROUND)) $(ARGS)

bench-label: $(VENV)/.installed postgres ## print labeling latency (20 concurrent annotators vs the app; SQLite and PostgreSQL) and seeding speed
	$(PY) -m bench.label --config $(LABEL) --model $(RUNS)/sft/model $(ARGS)

bench-active: $(RUNS)/sft/DONE ## print reward-model accuracy vs labels for active and random sampling (labels to reach 80 %)
	$(PY) -m bench.active --model $(RUNS)/sft/model --prompts "$(PROMPTS)" \
		--heldout-prompts $(RUNS)/world/prompts_heldout.jsonl --label-config $(LABEL) --reward-config $(CFG)/reward.yaml $(ARGS)

# The control: the same reward / DPO / PPO stages on the training pairs with chosen and rejected swapped at random,
# once per shuffle in SHUFFLES, each into $(CONTROL)/<shuffle>. One random swap leaves some direction by chance (more
# sign-offs on one side), which PPO can follow: a single shuffle's figure is a draw, so the table shows their spread.
# 'both' trains on every pair written both ways: no direction at all, so nothing a reward model could pass to PPO.
CONTROL  := $(RUNS)/control
SHUFFLES ?= 0 1 2 both
bench-control: $(RUNS)/reward/DONE $(RUNS)/dpo/DONE $(RUNS)/ppo/DONE ## the same reward/DPO/PPO on labels shuffled at random (SHUFFLES='0 1 2 both': three shuffles and the pairs both ways), next to the real ones (is the gain the labels'?)
	@rm -rf $(addprefix $(CONTROL)/,prefs reward dpo ppo)  # the layout of one shuffle, before each had its folder
	@for s in $(SHUFFLES); do d=$(CONTROL)/$$s; rm -rf $$d; set -x; \
	$(PY) -m bench.control shuffle --train $(PREFS_TRAIN) --out $$d/prefs/train.jsonl --seed $$s && \
	$(LAUNCH) -m reward.train --config $(CFG)/reward.yaml --model $(RUNS)/sft/model --train $$d/prefs/train.jsonl \
		--test "$(PREFS_TEST)" --out $$d/reward best_of_n.per_task=0 && \
	$(LAUNCH) -m rlhf.dpo --config $(CFG)/dpo.yaml --model $(RUNS)/sft/model --train $$d/prefs/train.jsonl \
		--test "$(PREFS_TEST)" --heldout-prompts $(RUNS)/world/prompts_heldout.jsonl --out $$d/dpo && \
	$(LAUNCH) -m rlhf.ppo --config $(CFG)/ppo.yaml --model $(RUNS)/sft/model --reward-model $$d/reward/model \
		--prompts "$(PROMPTS)" --heldout-prompts $(RUNS)/world/prompts_heldout.jsonl \
		--out $$d/ppo || exit 1; set +x; done
	$(PY) -m bench.control table --runs $(RUNS) --control $(CONTROL)

# The same reward / DPO / PPO stages with other seeds (head init, batch order, rollouts), on the same labels.
SEEDS ?= 1 2
bench-seeds: $(RUNS)/reward/DONE $(RUNS)/dpo/DONE $(RUNS)/ppo/DONE ## reward model, DPO and PPO again with SEEDS='1 2': the spread over seeds
	@for s in $(SEEDS); do d=$(RUNS)/seeds/$$s; rm -rf $$d; set -x; \
	$(LAUNCH) -m reward.train --config $(CFG)/reward.yaml --model $(RUNS)/sft/model --train "$(PREFS_TRAIN)" \
		--test "$(PREFS_TEST)" --out $$d/reward seed=$$s best_of_n.per_task=0 && \
	$(LAUNCH) -m rlhf.dpo --config $(CFG)/dpo.yaml --model $(RUNS)/sft/model --train "$(PREFS_TRAIN)" \
		--test "$(PREFS_TEST)" --heldout-prompts $(RUNS)/world/prompts_heldout.jsonl --out $$d/dpo seed=$$s && \
	$(LAUNCH) -m rlhf.ppo --config $(CFG)/ppo.yaml --model $(RUNS)/sft/model --reward-model $$d/reward/model \
		--prompts "$(PROMPTS)" --heldout-prompts $(RUNS)/world/prompts_heldout.jsonl \
		--out $$d/ppo seed=$$s || exit 1; set +x; done
	$(PY) -m bench.control seeds --runs $(RUNS) --seeds-dir $(RUNS)/seeds

##@ Clean-up
clean: ## delete runs/ (model artifacts); never touches data/ (labels)
	rm -rf runs

distclean: clean ## also delete the virtual environment
	rm -rf $(VENV)
