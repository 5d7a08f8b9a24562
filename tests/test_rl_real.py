"""Real folds of the embedded SmolLM2 on CPU through TRL: GRPO (mixed-policy), SFT, DPO, and the gate."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from insightloop.core.config import Config
from insightloop.core.episode import Chain, Episode, Trajectory
from insightloop.core.task import Reward, Task
from insightloop.evals.verifiers import verify
from insightloop.memory.chains import append_chains
from insightloop.rl import checkpoints as ck
from insightloop.rl.data import build_grpo_prompts, chat_render
from insightloop.rl.fold import FoldData, fold
from insightloop.rl.grpo import make_grpo_trainer
from insightloop.rl.policy import load_policy

pytestmark = pytest.mark.real

WORDS = ["apple", "river", "green", "house", "stone", "bread", "cloud", "tiger", "lemon"]


def copy_task(word: str) -> Task:
    prompt = f'What is the word in quotes: "{word}"? Reply with the word.'
    return Task(id=f"copy-{word}", family="copy", prompt=prompt,
                answer=word, verifier="exact")


def small_cfg(group_size: int = 2, **fold: object) -> Config:
    cfg = Config()
    cfg.search = cfg.search.model_copy(update=dict(strategy="sample", rollouts=2, answer_tokens=40))
    grpo = cfg.fold.grpo.model_copy(update=dict(group_size=group_size, max_prompts=4))
    base = dict(steps=2, batch_size=2, max_completion_tokens=32, gate_max_tokens=40, gate_slice=2, grpo=grpo)
    cfg.fold = cfg.fold.model_copy(update=base | fold)
    return cfg


@pytest.fixture(scope="module")
def base() -> Path:
    from insightloop.core.models import embedded_policy_path

    return embedded_policy_path()


@pytest.fixture(scope="module")
def lm(base: Path):
    from insightloop.agent.backends.hf import HFBackend

    return HFBackend(Config().policy.model_copy(update={"model": str(base)}))


@pytest.fixture(scope="module")
def episodes(lm) -> list[Episode]:
    """Real episodes: the solver sampling two attempts at each copy task."""
    from insightloop.agent.search.solve import solve_many

    return solve_many([copy_task(w) for w in WORDS[:4]], lm, small_cfg().search)


def completion_logprob(model, tok, prompt: str, completion: str) -> float:
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return float(logp[len(p) - 1:].gather(1, ids[0, len(p):, None]).sum())


def first_param(folder: Path | str) -> torch.Tensor:
    from safetensors.torch import load_file

    weights = load_file(str(Path(folder) / "model.safetensors"))
    return weights["model.layers.0.self_attn.q_proj.weight"]


def test_offpolicy_chain_rescues_all_wrong_group_and_gains_logprob(base: Path, tmp_path: Path):
    secret = Task(id="secret", family="toy", prompt="What is the secret code word?", answer="zebraquill",
                  verifier="exact")
    failed = Episode(id="e1", task=secret, reward=Reward(score=0.0),
                     trajectories=[Trajectory(text="Step 1: I do not know.\n\nAnswer: unknown", reward=0.0)])
    chain = Chain(task=secret, text="Step 1: The secret code word is zebraquill.\n\nAnswer: zebraquill",
                  verified=True)
    model, tok = load_policy(base)
    (prompt,) = build_grpo_prompts([failed], [chain], chat_render(tok), 1, random.Random(0))
    fc = small_cfg(lr=2e-5, group_size=3, batch_size=1).fold
    trainer, rollout = make_grpo_trainer(model, tok, [prompt], fc, 2, tmp_path, verify)
    seen: list[dict] = []
    inner = trainer._generate_and_score_completions

    def spy(inputs):
        out = inner(inputs)
        seen.append(out)
        return out

    trainer._generate_and_score_completions = spy
    before = completion_logprob(model, tok, prompt.prompt, prompt.offpolicy)
    trainer.train()
    after = completion_logprob(model, tok, prompt.prompt, prompt.offpolicy)
    assert rollout.joined == rollout.groups == 2  # the tiny model never guesses the word on its own
    adv = seen[0]["advantages"].flatten().tolist()
    assert adv[-1] > 0 and all(a < 0 for a in adv[:-1])  # the chain is last in its group
    assert all(log["frac_reward_zero_std"] == 0.0 for log in trainer.state.log_history if "reward" in log)
    assert after > before + 0.5, (before, after)


def test_grpo_fold_from_real_episodes_writes_reloadable_checkpoint(base: Path, lm, episodes, tmp_path: Path):
    from insightloop.memory.episodes import open_episodes
    from transformers import AutoModelForCausalLM

    with open_episodes(tmp_path) as stored:
        for ep in episodes:
            stored.add(ep)
    append_chains(tmp_path, [Chain(task=episodes[0].task, text=f"Step 1: It is {episodes[0].task.answer}."
                                   f"\n\nAnswer: {episodes[0].task.answer}", verified=True)])
    events = []
    # This test is about the fold; the gate has its own. One prompt per step keeps it small.
    cfg = small_cfg(lr=1e-5, gate_tolerance=1.0, batch_size=1, gate_slice=1)
    result = fold(tmp_path, cfg, method="grpo", lm=lm, on_event=events.append)
    assert result.accepted and ck.current(tmp_path) == Path(result.checkpoint)
    assert not torch.equal(first_param(result.checkpoint), first_param(base))
    reloaded = AutoModelForCausalLM.from_pretrained(result.checkpoint)
    assert reloaded.num_parameters() > 100_000_000
    m = ck.read_manifest(result.checkpoint)
    assert m.method == "grpo" and m.status == "accepted" and m.parent is None and m.base_model == "embedded"
    assert m.data_counts["prompts"] >= 1 and m.data_counts["validation"] == 1 and m.data_counts["chains"] == 1
    assert "loss" in m.metrics and "mean_reward" in m.metrics and m.gate["n"] == 1 and m.config["steps"] == 2
    assert [e.step for e in events if e.kind == "fold_step" and e.stage == "grpo"][-1] == 2
    assert lm.model_path == result.checkpoint  # handed off to the live backend


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_sft_and_dpo_folds(method: str, base: Path, lm, episodes, tmp_path: Path):
    secret = copy_task("lemon")
    tree_ep = Episode(id="dpo", task=secret, reward=Reward(score=1.0), trajectories=[
        Trajectory(text='Step 1: The word in quotes is "lemon".\n\nAnswer: lemon', reward=1.0),
        Trajectory(text="Step 1: It is a fruit.\n\nAnswer: orange", reward=0.0)])
    data = FoldData(episodes=[*episodes[1:], tree_ep], validation=[episodes[0].task])
    cfg = small_cfg(lr=1e-5, gate_tolerance=1.0)
    result = fold(tmp_path, cfg, method=method, lm=lm, data=data)
    m = ck.read_manifest(result.checkpoint)
    assert m.method == method and m.steps == 2 and m.data_counts[f"{method}_examples" if method == "sft"
                                                                  else "dpo_pairs"] >= 1
    assert not torch.equal(first_param(result.checkpoint), first_param(base))
    assert load_policy(result.checkpoint)[0].num_parameters() > 100_000_000
    if method == "dpo":
        assert m.config["dpo"]["label_smoothing"] > 0 and "loss" in m.metrics


def test_gate_rejects_harmful_fold_and_keeps_old_weights(base: Path, lm, tmp_path: Path):
    # Train toward wrong answers (as a broken verifier would let through), hard, on other copy prompts.
    wrong = [Chain(task=copy_task(w), text="Step 1: The word is banana.\n\nAnswer: banana", verified=True)
             for w in WORDS[4:8]]
    val = [copy_task(w) for w in WORDS[:3]]
    cfg = small_cfg(lr=5e-4, steps=4, batch_size=4, lora=False)  # full fine-tuning: LoRA moves too little here
    result = fold(tmp_path, cfg, method="sft", lm=lm, data=FoldData(chains=wrong, validation=val))
    assert result.gate.old_accuracy >= 0.5 and result.gate.new_accuracy < result.gate.old_accuracy
    assert not result.accepted and ck.current(tmp_path) is None
    m = ck.read_manifest(result.checkpoint)
    assert m.status == "rejected" and m.gate["accepted"] is False
    assert [p.name for p in Path(result.checkpoint).iterdir()] == ["manifest.json"]
    assert lm.model_path == str(base)  # the live backend was rolled back
