"""The widget's stepper in headless Chromium, against real daphne and Redis: it follows the active stage live."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode
from realtime_async._writing.writer import get_writer
from tests.browser_helpers import assert_clean, events, new_page, widget

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 20_000
NAMES = ["Load", "Process <b>me</b>", "Save"]


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("stager")


@pytest.fixture
def page(browser, base_url, user):
    page = new_page(browser, base_url, user=user, timeout_ms=WAIT_MS)
    yield page
    page.context.close()


class Task:
    """A task whose records this test writes, as a worker with stages would."""

    def __init__(self, user, *, stages: bool):
        self.name = new_task_name("stg")
        self.base = {"task": self.name, "owner": user.pk, "created_at": time.time()}
        first = {"stages": self.stages(-1), "stage": None} if stages else {}
        get_writer().commit({**self.base, "state": "queued", **first}, mode=WriteMode.CREATE)

    @staticmethod
    def stages(active: int, *, final: str | None = None) -> list[dict]:
        def state(index: int) -> str:
            if index < active or final == "success":
                return "done"
            return "active" if index == active else "pending"

        return [
            {"name": name, "state": state(index), "weight": 1.0, "percent": 100.0 if state(index) == "done" else None}
            for index, name in enumerate(NAMES)
        ]

    def enter(self, active: int) -> None:
        percent = active * 100 / len(NAMES)
        record = {"state": "running", "stages": self.stages(active), "stage": NAMES[active], "percent": percent}
        get_writer().commit({**self.base, **record})

    def succeed(self) -> None:
        record = {"state": "success", "stages": self.stages(0, final="success"), "stage": None, "percent": 100.0}
        get_writer().commit({**self.base, **record})


def open_widget(page, task: Task):
    response = page.goto("/demo/widgets/?" + urlencode({"task": task.name}))
    assert response.status == 200, response.status
    return widget(page, task.name)


def steps(root) -> list[tuple[str, str, str | None]]:
    """(name, data-ra-stage-state, aria-current) of each step, as the browser has them."""
    found = root.locator('[data-ra-field="stages"] > li').evaluate_all(
        """items => items.map(item => [
             item.querySelector('.ra-progress__stage-name').textContent,
             item.dataset.raStageState,
             item.getAttribute('aria-current'),
           ])"""
    )
    return [tuple(step) for step in found]


def wait_current(page, task: Task, index: int) -> None:
    page.wait_for_function(
        """([task, n]) => {
             const items = document.querySelectorAll(`[data-ra-task="${task}"] [data-ra-field="stages"] > li`);
             return items.length === 3 && items[n].getAttribute('aria-current') === 'step';
           }""",
        arg=[task.name, index],
    )


def test_the_stepper_appears_and_follows_the_active_stage_live(page, user):
    task = Task(user, stages=False)  # the widget is rendered before the task declared its stages
    root = open_widget(page, task)
    assert root.locator('[data-ra-field="stages"]').count() == 0

    task.enter(0)
    wait_current(page, task, 0)
    assert steps(root) == [("Load", "active", "step"), (NAMES[1], "pending", None), ("Save", "pending", None)]
    stepper = root.get_by_role("list", name="Stages")
    assert stepper.count() == 1
    # The items stay the same elements from here on: changed in place, not redrawn.
    root.locator('[data-ra-field="stages"] > li').first.evaluate("item => { window.__firstStep = item; }")

    task.enter(1)
    wait_current(page, task, 1)
    assert steps(root) == [("Load", "done", None), (NAMES[1], "active", "step"), ("Save", "pending", None)]
    assert root.locator("li b").count() == 0  # a name is text, never markup

    task.enter(2)
    wait_current(page, task, 2)
    assert steps(root) == [("Load", "done", None), (NAMES[1], "done", None), ("Save", "active", "step")]
    # The current step's state in words, for screen readers only (visually hidden).
    current = root.locator('[aria-current="step"] .ra-progress__stage-state')
    assert current.text_content() == " In progress"
    assert current.evaluate("node => node.getBoundingClientRect().width") <= 1

    task.succeed()
    page.wait_for_selector(f'[data-ra-task="{task.name}"][data-ra-state="success"]')
    assert steps(root) == [("Load", "done", None), (NAMES[1], "done", None), ("Save", "done", None)]
    first = f'[data-ra-task="{task.name}"] [data-ra-field="stages"] > li'
    assert page.evaluate(f"""() => window.__firstStep === document.querySelector('{first}')""")
    assert {event["transport"] for event in events(page, task.name) if event["name"] == "progress"} == {"ws"}
    assert_clean(page)


def test_a_reload_mid_task_renders_the_stepper_in_the_html(page, user):
    task = Task(user, stages=True)
    task.enter(1)
    root = open_widget(page, task)
    html = page.content()
    assert 'aria-current="step"' in html
    assert steps(root) == [("Load", "done", None), (NAMES[1], "active", "step"), ("Save", "pending", None)]
    # Styled by progress.css: a done step's marker is filled, the list is not bulleted.
    assert root.locator('[data-ra-field="stages"]').evaluate("list => getComputedStyle(list).listStyleType") == "none"
    done_marker = root.locator('[data-ra-stage-state="done"]').evaluate(
        "item => getComputedStyle(item, '::before').backgroundColor"
    )
    assert done_marker not in ("rgba(0, 0, 0, 0)", "transparent"), done_marker

    task.enter(2)
    wait_current(page, task, 2)
    task.succeed()
    page.wait_for_selector(f'[data-ra-task="{task.name}"][data-ra-state="success"]')
    assert root.locator('[aria-current="step"]').count() == 0
    assert_clean(page)
