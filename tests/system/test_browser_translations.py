"""The widget in German and French in headless Chromium, against real daphne and Redis.

The language comes from the browser (``Accept-Language``) or from Django's
language cookie, through ``LocaleMiddleware`` in the test project's settings.
The server renders the first state in it and sends the script its strings
(``display.i18n()``); every later state the script renders must stay in it,
the stock messages that records hold in English included.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from django.conf import settings

from realtime_async._core.messages import CANCELLED
from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode
from realtime_async._writing.writer import get_writer
from tests.browser_helpers import assert_clean, new_page, widget

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 20_000
NAMES = ["Load", "Save"]

#: What a viewer sees, by language: how the page gets it, then the texts.
LANGUAGES = {
    "de": {
        "locale": "de-DE",  # Accept-Language: de-DE
        "cookie": None,
        "running": "Läuft",
        "eta_min": "noch 3 min",
        "eta_s": "noch 30 s",
        "active_step": " In Arbeit",
        "done_step": " Erledigt",
        "stages": "Phasen",
        "cancel": "Abbrechen",
        "cancelled": "Abgebrochen",
        "cancelled_message": "Abgebrochen.",
    },
    "fr": {
        "locale": "en-US",  # an English browser, a French choice in the cookie: the cookie wins
        "cookie": "fr",
        "running": "En cours",
        "eta_min": "encore 3 min",
        "eta_s": "encore 30 s",
        "active_step": " En cours",
        "done_step": " Terminée",
        "stages": "Étapes",
        "cancel": "Annuler",
        "cancelled": "Annulée",
        "cancelled_message": "Annulée.",
    },
}


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("polyglot")


def stages(active: int) -> list[dict]:
    return [
        {"name": name, "state": "done" if index < active else "active" if index == active else "pending"}
        for index, name in enumerate(NAMES)
    ]


def text(root, field: str) -> str:
    return root.locator(f'[data-ra-field="{field}"]').text_content()


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_the_widget_speaks_the_visitors_language_live(browser, base_url, user, language):
    words = LANGUAGES[language]
    page = new_page(browser, base_url, user=user, timeout_ms=WAIT_MS, locale=words["locale"])
    if words["cookie"]:
        page.context.add_cookies([{"name": settings.LANGUAGE_COOKIE_NAME, "value": words["cookie"], "url": base_url}])
    try:
        name = new_task_name("i18n")
        base = {"task": name, "owner": user.pk, "created_at": time.time()}
        writer = get_writer()
        writer.commit(
            {**base, "state": "running", "percent": 10.0, "eta": 150, "stages": stages(0), "stage": NAMES[0]},
            mode=WriteMode.CREATE,
        )
        response = page.goto("/demo/widgets/?" + urlencode({"task": name}))
        assert response.status == 200, response.status
        assert response.headers["content-language"] == language
        root = widget(page, name)

        # Rendered by the server, in the visitor's language.
        assert text(root, "state") == words["running"]
        assert text(root, "eta") == words["eta_min"]
        assert root.locator('[data-ra-field="stages"]').get_attribute("aria-label") == words["stages"]
        assert root.locator("[data-ra-cancel]").text_content() == words["cancel"]

        # Rendered by the script from a live record, in the same language.
        writer.commit({**base, "state": "running", "percent": 60.0, "eta": 30, "stages": stages(1), "stage": NAMES[1]})
        page.wait_for_function(
            "([task, eta]) => document.querySelector(`[data-ra-task='${task}'] [data-ra-field='eta']`)"
            "?.textContent === eta",
            arg=[name, words["eta_s"]],
        )
        assert text(root, "state") == words["running"]
        current = root.locator('[aria-current="step"] .ra-progress__stage-state')
        assert current.text_content() == words["active_step"]
        assert root.locator(".ra-progress__stage-state").first.text_content() == words["done_step"]

        # A final state whose message the record holds in English: shown translated.
        writer.commit({**base, "state": "cancelled", "percent": 60.0, "message": CANCELLED, "stages": stages(1)})
        page.wait_for_selector(f'[data-ra-task="{name}"][data-ra-state="cancelled"]')
        assert text(root, "state") == words["cancelled"]
        assert text(root, "message") == words["cancelled_message"]
        assert root.locator("[data-ra-field='eta']").is_hidden()
        assert_clean(page)
    finally:
        page.context.close()
