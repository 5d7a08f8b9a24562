"""Folding: datasets from episodes, gate rule, checkpoints (fast), and real TRL folds on SmolLM2 (real)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from insightloop.agent.search.domain import ATTEMPT_PRIMER
from insightloop.core.config import Config, ConfigError, load_config
from insightloop.core.episode import Chain, Episode, SearchTree, Trajectory
from insightloop.core.task import Reward, Task
from insightloop.memory.chains import append_chains, load_chains
from insightloop.rl import checkpoints as ck
from insightloop.rl.data import build_dpo_pairs, build_grpo_prompts, build_sft_examples
from insightloop.rl.dpo import dpo_losses
from insightloop.rl.gate import decide


def render(task: Task, insights=()) -> str:
    return f"<user>{task.prompt}{'|' + ';'.join(insights) if insights else ''}</user>"


def task(i: int, answer: str = "7") -> Task:
    return Task(id=f"t{i}", family="toy", prompt=f"problem {i}", answer=answer, verifier="exact")


def episode(t: Task, started: float, good: list[str], bad: list[str]) -> Episode:
    """A tree: a shared first step, then one branch per attempt."""
    tree = SearchTree()
    first = tree.add(0, "Step 1: shared\n\n")
    trajs = []
    for text, reward in [(g, 1.0) for g in good] + [(b, 0.0) for b in bad]:
        node = tree.add(first.id, text, reward=reward)
        full = first.step_text + text
        trajs.append(Trajectory(node_ids=[first.id, node.id], steps=[first.step_text, text], text=full,
                                reward=reward))
    correct = bool(good)
    return Episode(id=f"e-{t.id}-{started}", task=t, tree=tree, trajectories=trajs, started=started,
                   reward=Reward(score=1.0 if correct else 0.0))


# ------------------------------------------------------------------------------------------ data


def test_fold_data_comes_from_the_run_memory(tmp_path: Path):
    from insightloop.memory.episodes import open_episodes
    from insightloop.rl.fold import load_fold_data

    eps = [episode(task(i), float(i), ["Answer: 7"], []) for i in range(6)]
    with open_episodes(tmp_path) as stored:
        for ep in reversed(eps):
            stored.add(ep)
    data = load_fold_data(tmp_path, Config())
    held = {t.id for t in data.validation}
    assert held and [e.id for e in data.episodes] == [e.id for e in eps if e.task.id not in held]


def test_dpo_pair_prefix_in_prompt_shortest_correct_vs_shortest_shared_prefix():
    t = task(1)
    ep = episode(t, 1.0, good=["Step 2: long way round\n\nAnswer: 7", "Answer: 7"], bad=["Answer: 8"])
    # A wrong attempt that shares no step with the correct one: it must be the rejected one.
    other = ep.tree.add(0, "Step 1: different\n\nAnswer: 9", reward=0.0)
    ep.trajectories.append(Trajectory(node_ids=[other.id], steps=[other.step_text], text=other.step_text,
                                      reward=0.0))
    (pair,) = build_dpo_pairs([ep], render)
    assert pair.chosen == "Step 1: shared\n\nAnswer: 7"  # the shorter correct one
    assert pair.rejected == "Step 1: different\n\nAnswer: 9"
    assert pair.shared_steps == 0 and pair.prompt == render(t)
    # Same tree without the divergent-at-root attempt: the shared step moves into the prompt.
    ep.trajectories.pop()
    (pair,) = build_dpo_pairs([ep], render)
    assert pair.prompt.endswith("Step 1: shared\n\n") and pair.shared_steps == 1
    assert (pair.chosen, pair.rejected) == ("Answer: 7", "Answer: 8")


def test_sft_takes_longest_correct_text_and_grpo_weights_failures(tmp_path: Path):
    t1, t2 = task(1), task(2)
    eps = [episode(t1, 1.0, ["Answer: 7"], []), episode(t2, 2.0, [], ["Answer: 3"])]
    chain = Chain(task=t2, text="Step 1: careful work here\n\nAnswer: 7", verified=True)
    unverified = Chain(task=t1, text="Step 1: a much longer unverified chain\n\nAnswer: 1", verified=False)
    append_chains(tmp_path, [chain, unverified])
    with (tmp_path / "chains.jsonl").open("a") as f:
        f.write('{"task": {"id": "torn')  # a crash mid-append
    chains = load_chains(tmp_path)
    assert [c.text for c in chains] == [chain.text, unverified.text]
    sft = {e.task_id: e for e in build_sft_examples(eps, chains, render)}
    assert set(sft) == {"t1", "t2"} and sft["t2"].source == "chain"
    assert sft["t1"].completion == "Step 1: shared\n\nAnswer: 7"
    picks = [build_grpo_prompts(eps, chains, render, 1, random.Random(s))[0].task.id for s in range(200)]
    assert 0.7 < picks.count("t2") / 200 < 0.95  # weights 1.25 vs 0.25
    both = {p.task.id: p for p in build_grpo_prompts(eps, chains, render, 2, random.Random(0))}
    assert both["t2"].offpolicy == " careful work here\n\nAnswer: 7" and both["t2"].fail_rate == 1.0
    assert both["t2"].prompt.endswith(ATTEMPT_PRIMER)
    with_ins = build_grpo_prompts(eps, chains, render, 2, random.Random(0), insights={"t1": ["hint"]})
    assert any("|hint" in p.prompt for p in with_ins)


def test_gate_rule_is_paired_and_noise_aware():
    assert not decide([1, 1, 1, 1], [0, 0, 0, 0], 0.05, 1.0).accepted
    assert decide([1, 0, 1, 0], [1, 0, 1, 0], 0.0, 1.0).accepted
    noisy = decide([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 0], 0.05, 1.0)  # -1 of 6, well inside the noise
    assert noisy.accepted and noisy.margin > 0.05
    assert not decide([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 0], 0.05, 0.0).accepted
    with pytest.raises(ValueError):
        decide([], [], 0.1, 1.0)


def test_dpo_uses_trl_losses():
    dpo = Config().fold.dpo
    assert dpo_losses(dpo) == (["robust", "sft"], [1.0, 1.0])
    assert dpo_losses(dpo.model_copy(update=dict(label_smoothing=0.0, sft_weight=0.0))) == (["sigmoid"], [1.0])


@pytest.mark.parametrize("config", ["SFTConfig", "DPOConfig", "GRPOConfig"])
def test_trainer_arguments_raise_no_deprecation_warning(config: str):
    """Our TrainingArguments use transformers' current names (TRL defaults the old checkpointing one)."""
    import warnings

    import trl
    from insightloop.core.config import FoldConfig
    from insightloop.rl.policy import common_args

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        args = getattr(trl, config)(**common_args(FoldConfig(), 2, "unused-out", 0))
    assert args.max_steps == 2 and args.gradient_checkpointing is False


def test_fold_config_has_a_section_per_method(tmp_path: Path):
    cfg = load_config(None, ["fold.grpo.group_size=3", "fold.dpo.beta=0.2", "fold.sft.max_length=512"])
    assert (cfg.fold.grpo.group_size, cfg.fold.dpo.beta, cfg.fold.sft.max_length) == (3, 0.2, 512)
    assert cfg.fold.dpo.max_length == 1024 and cfg.fold.method == "grpo"
    yaml_file = tmp_path / "nested.yaml"
    yaml_file.write_text("fold:\n  method: dpo\n  dpo:\n    label_smoothing: 0.0\n")
    assert load_config(yaml_file).fold.dpo.label_smoothing == 0.0


@pytest.mark.parametrize(("old", "new"), [
    ("fold.beta=0.2", "fold.dpo.beta"),
    ("fold.group_size=3", "fold.grpo.group_size"),
    ("fold.use_vllm=true", "fold.grpo.use_vllm"),
    ("fold.max_length=512", "fold.sft.max_length and fold.dpo.max_length"),
])
def test_old_flat_fold_keys_fail_naming_the_new_key(old: str, new: str, tmp_path: Path):
    with pytest.raises(ConfigError, match=f"is now {new}"):
        load_config(None, [old])
    key, value = old.removeprefix("fold.").split("=")
    yaml_file = tmp_path / "old.yaml"
    yaml_file.write_text(f"fold:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=f"is now {new}"):
        load_config(yaml_file)
    with pytest.raises(ValueError, match=f"is now {new}"):
        Config().fold.model_copy(update={key: 1})


class _Saveable:
    def __init__(self, name: str):
        self.name = name

    def save_pretrained(self, folder: Path, **_: object) -> None:
        (Path(folder) / f"{self.name}.json").write_text("{}")


def test_checkpoints_atomic_current_and_rejected_keeps_manifest(tmp_path: Path):
    assert ck.current(tmp_path) is None and ck.next_index(tmp_path) == 1
    m = ck.Manifest(index=1, base_model="embedded", method="sft", steps=2)
    one = ck.write_checkpoint(tmp_path, _Saveable("model"), _Saveable("tok"), m)
    ck.set_current(tmp_path, one)
    assert ck.current(tmp_path) == one and ck.next_index(tmp_path) == 2
    m2 = m.model_copy(update={"index": 2})
    two = ck.write_checkpoint(tmp_path, _Saveable("model"), _Saveable("tok"), m2)
    ck.discard_weights(two)
    ck.update_manifest(two, status="rejected")
    assert [p.name for p in two.iterdir()] == ["manifest.json"]
    assert ck.current(tmp_path) == one
    assert [x.status for x in ck.list_checkpoints(tmp_path)] == ["pending", "rejected"]
    with pytest.raises(FileExistsError):
        ck.write_checkpoint(tmp_path, _Saveable("model"), _Saveable("tok"), m)
    assert not [p for p in ck.checkpoints_dir(tmp_path).iterdir() if p.name.startswith(".")]


class _Broken:
    def save_pretrained(self, folder: Path, **_: object) -> None:
        (Path(folder) / "half.bin").write_text("x")
        raise OSError("disk full")


def test_failed_checkpoint_write_leaves_nothing_behind(tmp_path: Path):
    m = ck.Manifest(index=1, base_model="embedded", method="sft", steps=2)
    with pytest.raises(OSError, match="disk full"):
        ck.write_checkpoint(tmp_path, _Saveable("model"), _Broken(), m)
    assert list(ck.checkpoints_dir(tmp_path).iterdir()) == [] and ck.next_index(tmp_path) == 1


def test_atomic_dir_never_overwrites_a_folder(tmp_path: Path):
    from insightloop.core.files import atomic_dir

    dest = tmp_path / "model"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("first")
    with atomic_dir(dest, exist_ok=True) as tmp:  # another writer finished first: theirs is kept
        (tmp / "a").write_text("second")
    assert (dest / "a").read_text() == "first"
    with pytest.raises(FileExistsError), atomic_dir(dest) as tmp:
        (tmp / "a").write_text("third")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


class _Tok:
    """A character-level stand-in for a tokenizer (ids are code points; 0 is EOS)."""

    eos_token_id = 0

    def __call__(self, text=None, add_special_tokens=True):
        if isinstance(text, list):
            return {"input_ids": [[ord(c) for c in t] for t in text]}
        return {"input_ids": [ord(c) for c in text]}

    def batch_decode(self, ids, skip_special_tokens=True):
        return ["".join(chr(i) for i in seq if i) for seq in ids]


class _Model:
    training = True


class _Trainer:
    """Just what the rollout reads from a GRPOTrainer: tokenizer, group size and its generator."""

    def __init__(self, samples: list[str]):
        self.processing_class, self.model, self.num_generations = _Tok(), _Model(), 2
        self.samples = samples

    def _generate_single_turn(self, prompt_ids, images, fields, n):
        return [[ord(c) for c in s] for s in self.samples], None


def exact(t: Task, text: str) -> Reward:
    from insightloop.evals.verifiers import verify

    return verify(t, text)


def test_rollout_puts_chain_only_into_all_wrong_groups_and_reward_scores_it():
    from insightloop.rl.grpo import MixedPolicyRollout, verifier_reward

    t1, t2 = task(1), task(2)
    p1 = build_grpo_prompts([episode(t1, 1.0, [], ["Answer: 3"])],
                            [Chain(task=t1, text="Step 1: think\n\nAnswer: 7", verified=True)], render, 1,
                            random.Random(0))[0]
    p2 = p1.model_copy(update={"prompt": "other", "task": t2})
    rollout = MixedPolicyRollout([p1, p2], exact)
    trainer = _Trainer([" no\n\nAnswer: 1", " no\n\nAnswer: 2", " yes\n\nAnswer: 7", " no\n\nAnswer: 5"])
    out = rollout([p1.prompt, p1.prompt, "other", "other"], trainer)
    assert out["offpolicy"] == [False, True, False, False]  # group 2 already has a correct sample
    assert out["completion_ids"][1] == [ord(c) for c in " think\n\nAnswer: 7"] + [0]
    texts = _Tok().batch_decode(out["completion_ids"])
    rewards = verifier_reward(exact)([], texts, [t1.model_dump_json()] * 2 + [t2.model_dump_json()] * 2)
    assert rewards == [0.0, 1.0, 1.0, 0.0]
    assert (rollout.groups, rollout.joined) == (2, 1)
    off = MixedPolicyRollout([p1], exact, mix=False)([p1.prompt] * 2, _Trainer(["a", "b"]))
    assert off["offpolicy"] == [False, False]


def test_report_table_renders():
    import io

    from insightloop.apps.cli.fold import report_table
    from insightloop.rl.fold import FoldResult
    from rich.console import Console

    g = decide([1, 0], [1, 1], 0.05, 1.0)
    res = FoldResult(index=3, checkpoint="/x/3", accepted=True, method="grpo", steps=2, lora=True,
                     parent=None,
                     data_counts={"prompts": 4}, metrics={"mean_reward": 0.25}, gate=g, seconds=1.0)
    buf = io.StringIO()
    Console(file=buf, width=120).print(report_table(res))
    text = buf.getvalue()
    assert "0.500" in text and "1.000" in text and "accepted" in text and "prompts=4" in text
