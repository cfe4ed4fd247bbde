"""The caption flow: caption -> refine -> (review in the Prefect UI) -> refine -> captions gate.

When the review queue is not empty and the run is interactive, the flow pauses with a typed form (one
entry per flagged caption: accept / edit / reject) that a reviewer fills in the Prefect UI, through the API
or with ``resume_flow_run``. The answers go to the same decisions file the terminal review writes, so the
next ``dvc repro`` re-applies them without anyone at the keyboard.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from pydantic import BaseModel

from diffx.caption.decisions import Decision, append_decision
from diffx.caption.queue import QueueItem, read_queue
from diffx.config import load_config
from flows.tasks import caption_task, gate_task, refine_task


class ReviewItem(BaseModel):
    id: str
    action: Literal["accept", "edit", "reject", "skip"] = "skip"
    caption: str
    flags: list[str] = []
    reviewed: str = ""


class CaptionReview(RunInput):
    """The form shown in the Prefect UI when the caption flow pauses."""

    reviewer: str = ""
    items: list[ReviewItem]


def review_form(queue: list[QueueItem]) -> CaptionReview:
    return CaptionReview(
        items=[ReviewItem(id=q.id, caption=q.caption, flags=q.flags, reviewed=q.reviewed) for q in queue]
    )


def apply_review(decisions_path: str, answer: CaptionReview) -> dict[str, int]:
    counts = {"accept": 0, "edit": 0, "reject": 0, "skip": 0}
    for item in answer.items:
        counts[item.action] += 1
        if item.action == "skip":
            continue
        text = " ".join(item.caption.split()) if item.action == "edit" else None
        if item.action == "edit" and not text:
            counts["edit"] -= 1
            counts["skip"] += 1
            continue
        append_decision(decisions_path, Decision(item.id, item.action, item.reviewed, text, answer.reviewer))
    return counts


def _queue_markdown(queue: list[QueueItem]) -> str:
    rows = ["| id | caption | flags |", "| --- | --- | --- |"]
    rows += [f"| {q.id} | {q.caption[:160]} | {'; '.join(q.flags)} |" for q in queue]
    return "\n".join(rows)


@flow(name="diffx-captions", log_prints=True)
def caption_flow(
    params: str = "params.yaml", interactive: bool = False, review_timeout_s: int = 3600
) -> dict[str, Any]:
    """Caption, refine and gate; pause for a human review when asked to and there is something to review."""
    logger = get_run_logger()
    config = load_config(params)
    captions = caption_task(config)
    refined = refine_task(config)
    queue = read_queue(config.refine.queue)
    review: dict[str, int] = {}
    if queue:
        create_markdown_artifact(
            _queue_markdown(queue), key="caption-review-queue", description=f"{len(queue)} flagged caption(s)"
        )
    if interactive and queue:
        logger.info("pausing for review of %d flagged caption(s)", len(queue))
        answer = pause_flow_run(
            wait_for_input=CaptionReview.with_initial_data(
                description="Accept, edit or reject each flagged caption", **review_form(queue).model_dump()
            ),
            timeout=review_timeout_s,
        )
        review = apply_review(config.refine.decisions, answer)
        refined = refine_task(config)
    gate = gate_task(config, "captions")
    return {"caption": captions, "refine": refined, "review": review, "gate": gate["success"]}
