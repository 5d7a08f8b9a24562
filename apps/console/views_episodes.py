"""Renderers of episodes: the episode list, one episode's header, its search tree, one tree node.

Pure functions of `Episode` records. Tree steps are clipped; `episode ID --node N` shows one step in
full, with its path from the root and its rollout.
"""

from __future__ import annotations

from insightloop.apps.console.views import STEP_CHARS, clip, clock_time, fmt, reward_text
from insightloop.core.episode import Episode, Node
from insightloop.core.task import Task
from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

TREE_NODE_LIMIT = 400


def episodes_table(rows: list[Episode], title: str) -> Table:
    """One row per episode: task, phase, reward, answer, insights used, rollouts, tokens, time."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, caption="used: insights in the prompt")
    for col in ("id", "task", "phase", "reward", "answer", "used", "rollouts", "tokens", "finished"):
        numeric = col in ("reward", "used", "rollouts", "tokens")
        table.add_column(col, overflow="fold", style="cyan" if col == "id" else None,
                         justify="right" if numeric else "left")
    for ep in rows:
        table.add_row(ep.id, short_task(ep.task), str(ep.meta.get("phase", "-")), reward_text(ep),
                      clip(ep.answer or "-", 12), str(len(ep.insights_used)), str(ep.rollouts),
                      str(ep.prompt_tokens + ep.completion_tokens), clock_time(ep.finished))
    return table


def short_task(task: Task) -> str:
    """The task id without its family prefix (the family is in the episode view)."""
    prefix = task.family + "/"
    return task.id[len(prefix):] if task.id.startswith(prefix) and len(task.id) > len(prefix) else task.id


def used_insights(ep: Episode) -> list[tuple[str, str]]:
    """(id, text) of the insights in the episode's prompt: the prompt holds texts, meta their ids."""
    ids = ep.meta.get("insight_ids") or []
    if len(ids) != len(ep.insights_used):
        ids = ["-"] * len(ep.insights_used)
    return list(zip(ids, ep.insights_used, strict=True))


def episode_view(ep: Episode) -> Group:
    """The episode's header and its search tree."""
    return Group(episode_header(ep), episode_tree(ep))


def episode_header(ep: Episode) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("task", f"{ep.task.id}  ({ep.task.family}, verifier {ep.task.verifier})")
    grid.add_row("prompt", clip(ep.task.prompt, 400))
    grid.add_row("reference", ep.task.answer or "-")
    grid.add_row("answer", Text.assemble(ep.answer or "-", "  ", reward_text(ep)))
    grid.add_row("search", f"{ep.strategy}, {ep.rollouts} rollouts, {ep.prompt_tokens} prompt + "
                           f"{ep.completion_tokens} completion tokens, {ep.seconds:.1f}s")
    used = Text("none") if not ep.insights_used else Text("\n").join(
        Text.assemble((i, "cyan"), "  ", clip(t, 90)) for i, t in used_insights(ep))
    grid.add_row("insights used", used)
    return Panel(grid, title=f"episode {ep.id}", border_style="cyan")


def node_label(node: Node, best: set[int]) -> Text:
    reward = node.reward
    style = "green" if reward is not None and reward >= 1.0 else "red" if reward is not None else "dim"
    stats = f"#{node.id} n={node.visits} v={node.value:.2f} r={fmt(reward, '.0f')}"
    label = Text.assemble((stats, style), "  ", clip(node.step_text or "(empty step)", STEP_CHARS))
    if node.id in best:
        label.stylize("bold")
        label.append("  ★ chosen", style="bold yellow")
    return label


def episode_tree(ep: Episode) -> RenderableType:
    """The MCTS tree as a rich Tree, depth first, at most `TREE_NODE_LIMIT` nodes."""
    nodes = ep.tree.nodes
    best = set(ep.best.node_ids) if ep.best else set()
    root = Tree(Text(f"#0 root  n={nodes[0].visits} v={nodes[0].value:.2f}  ({len(nodes) - 1} steps)",
                     style="bold"))
    stack: list[tuple[Tree, int]] = [(root, c) for c in reversed(nodes[0].children)]
    shown = 0
    while stack and shown < TREE_NODE_LIMIT:
        parent, nid = stack.pop()
        branch = parent.add(node_label(nodes[nid], best))
        shown += 1
        stack.extend((branch, c) for c in reversed(nodes[nid].children))
    if stack:
        root.add(Text(f"… {len(nodes) - 1 - shown} more nodes not shown", style="dim"))
    if len(nodes) == 1:
        root.add(Text(f"no tree steps ({ep.strategy}); {len(ep.trajectories)} sampled attempts", style="dim"))
    return root


def node_detail(ep: Episode, node_id: int) -> Panel:
    """One node in full: statistics, its step, the path from the root, the rollout from it.
    The caller checks that `node_id` is in the tree."""
    node = ep.tree.nodes[node_id]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("depth", str(node.depth))
    grid.add_row("parent", str(node.parent))
    grid.add_row("children", ", ".join(map(str, node.children)) or "-")
    grid.add_row("visits / value", f"{node.visits} / {node.value:.3f}")
    grid.add_row("reward", fmt(node.reward, ".2f"))
    grid.add_row("parsed answer", node.parsed_answer or "-")
    grid.add_row("tokens", f"{node.prompt_tokens} prompt + {node.completion_tokens} completion")
    parts: list[RenderableType] = [grid, Panel(Text(node.step_text or "(root)"), title="this step")]
    if node_id:
        parts.append(Panel(Text(ep.tree.path_text(node_id)), title="path from the root", border_style="dim"))
    if node.rollout_text:
        parts.append(Panel(Text(node.rollout_text), title="rollout from here", border_style="dim"))
    return Panel(Group(*parts), title=f"episode {ep.id} · node {node_id}", border_style="cyan")
