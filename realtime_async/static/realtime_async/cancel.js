/**
 * The widget's Cancel button ([data-ra-cancel], rendered only for viewers who
 * may cancel). The WebSocket is the only transport that carries a cancel: it
 * is used when the widget follows its task through it, else the button POSTs
 * to data-ra-cancel-url with the CSRF token (data-ra-csrf, else the csrftoken
 * cookie). Not public: LiveProgress.cancel() is.
 */

export class CancelButton {
  /** `widget`: the LiveProgress it belongs to (its task, client, i18n, text fields and events). */
  constructor(widget) {
    this.widget = widget;
    this.button = widget.element.querySelector("[data-ra-cancel]");
    this._busy = false;
    this._text = null;
    /** The cancel request on its way, if any: the widget tells its final events after it settles. */
    this.pending = null;
  }

  start() {
    this.button?.addEventListener("click", () => this.widget.cancel());
  }

  /** Ask the server to cancel the task; events say how it went. */
  cancel() {
    if (this.widget.done || this._busy) return Promise.resolve();
    this._busy = true;
    this.pending = this._request().finally(() => {
      this.pending = null;
    });
    return this.pending;
  }

  async _request() {
    const widget = this.widget;
    this._show(true);
    this._notice("");
    try {
      let transport = "http";
      const overSocket = widget.client?.transport === "ws" && widget.client.status === "open";
      if (widget.subscription?.active && overSocket && !widget.poller) {
        try {
          await widget.client.cancel(widget.task);
          transport = "ws";
        } catch {
          await this._overHttp(); // the socket went away in between
        }
      } else {
        await this._overHttp();
      }
      widget._dispatch("cancel-requested", { task: widget.task, transport });
    } catch (error) {
      this.refused(error);
    }
  }

  /** The server refused the cancel, or could not be reached. */
  refused(error) {
    const widget = this.widget;
    this._busy = false;
    if (widget.done) return;
    // Refused for good: the button would only be refused again. Anything else may work on a retry.
    const final = error.code === "forbidden" || error.code === "not_found";
    this._show(false, final);
    const notices = { forbidden: widget.i18n.cancel_forbidden, not_found: widget.i18n.unavailable };
    this._notice(notices[error.code] || widget.i18n.cancel_failed);
    widget._dispatch("cancel-failed", { task: widget.task, error });
  }

  /** The task is final (or cannot be shown): nothing left to cancel. */
  hide() {
    if (!this.button) return;
    this.button.hidden = true;
    this.button.disabled = true;
    this._notice("");
  }

  async _overHttp() {
    const task = this.widget.task;
    const url = this.button?.dataset.raCancelUrl;
    if (!url) throw { code: "unavailable", task, message: "No cancel endpoint." };
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json", "X-CSRFToken": this._csrfToken() },
      });
    } catch (error) {
      throw { code: "network", task, message: String(error) };
    }
    if (response.ok) return;
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Django's CSRF failure page, a proxy's error page: not an answer of the endpoint
    }
    const code = body?.type === "error" && body.code ? body.code : `http_${response.status}`;
    throw { code, task, message: body?.message || `HTTP ${response.status}` };
  }

  _csrfToken() {
    const token = this.button?.dataset.raCsrf;
    if (token) return token;
    const cookie = document.cookie.split(";").find((part) => part.trim().startsWith("csrftoken="));
    return cookie ? decodeURIComponent(cookie.trim().slice("csrftoken=".length)) : "";
  }

  _show(busy, gone = false) {
    const button = this.button;
    if (!button) return;
    if (this._text === null) this._text = button.textContent;
    button.disabled = busy || gone;
    button.hidden = gone;
    button.textContent = busy ? this.widget.i18n.cancelling || this._text : this._text;
    if (busy) button.setAttribute("aria-busy", "true");
    else button.removeAttribute("aria-busy");
  }

  _notice(text) {
    this.widget._text("notice", text || "");
  }
}
