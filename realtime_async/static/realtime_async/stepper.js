/**
 * The widget's stepper ([data-ra-field="stages"], an <ol> of <li data-ra-stage-state>,
 * the current one aria-current="step"), redrawn from display.js's stages. Split
 * from widget.js to keep it readable; only the items that changed are touched,
 * so screen readers are not told it all again.
 */

/** Draw `stages` into `element`'s stepper: made when stages first appear, hidden when they go. */
export function renderStages(element, stages, i18n = {}) {
  let list = element.querySelector('[data-ra-field="stages"]');
  if (!list) {
    if (!stages.length) return;
    list = document.createElement("ol");
    list.setAttribute("class", "ra-progress__stages");
    list.setAttribute("data-ra-field", "stages");
    list.setAttribute("aria-label", i18n.stages || "Stages");
    const message = element.querySelector('[data-ra-field="message"]');
    if (message?.parentNode) message.parentNode.insertBefore(list, message);
    else element.append(list);
  }
  if (list.hidden !== !stages.length) list.hidden = !stages.length;
  const items = [...list.children];
  for (const extra of items.slice(stages.length)) extra.remove();
  stages.forEach((stage, index) => {
    let item = items[index];
    if (!item?.querySelector(".ra-progress__stage-name") || !item.querySelector(".ra-progress__stage-state")) {
      const fresh = stageItem();
      if (item) item.replaceWith(fresh);
      else list.append(fresh);
      item = fresh;
    }
    if (item.getAttribute("data-ra-stage-state") !== stage.state) {
      item.setAttribute("data-ra-stage-state", stage.state);
    }
    if (stage.current && item.getAttribute("aria-current") !== "step") item.setAttribute("aria-current", "step");
    else if (!stage.current && item.hasAttribute("aria-current")) item.removeAttribute("aria-current");
    setText(item.querySelector(".ra-progress__stage-name"), stage.name);
    setText(item.querySelector(".ra-progress__stage-state"), ` ${stage.stateLabel}`);
  });
}

/** A blank stepper item, as progress.html renders one. */
function stageItem() {
  const item = document.createElement("li");
  item.setAttribute("class", "ra-progress__stage");
  for (const part of ["name", "state"]) {
    const span = document.createElement("span");
    span.setAttribute("class", `ra-progress__stage-${part}`);
    item.append(span);
  }
  return item;
}

/** Set `node`'s text only when it differs: unchanged text is not said again. */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
