// A button with data-confirm asks first (Send, Cancel, Resend unknown name how many people it touches);
// the form goes only if the person says yes.
document.addEventListener("submit", (event) => {
  const question = event.submitter && event.submitter.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// At phone width a list table becomes cards: each cell says what it is, from its column's head.
function labelCells(root) {
  root.querySelectorAll("table.list").forEach((table) => {
    const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    table.querySelectorAll("tbody tr").forEach((row) => {
      [...row.children].forEach((cell, index) => {
        if (heads[index] && !cell.dataset.label && !cell.hasAttribute("colspan")) {
          cell.dataset.label = heads[index];
        }
      });
    });
  });
}
document.addEventListener("DOMContentLoaded", () => labelCells(document));
document.addEventListener("htmx:afterSettle", () => labelCells(document));

// A segment's rule shows only the boxes its kind reads, and only its kind's ways of comparing (without
// JavaScript every box shows, and the server reads only the right ones). A box with an error stays.
const RULE_PARTS = {
  tag: ["op", "value"],
  attribute: ["key", "op", "value"],
  reached: ["stage", "tag", "follow_up_stage", "days"],
  not_reached: ["stage", "tag", "follow_up_stage", "days"],
  messaged_fewer: ["times", "days"],
};
const RULE_OPS = { tag: ["is", "is_not"], attribute: ["equals", "contains", "is_empty"] };
function showRuleParts(rule) {
  const part = (name) => rule.querySelector(`.part[data-field="${name}"]`);
  const kind = part("kind").querySelector("select").value;
  const op = part("op").querySelector("select");
  [...op.options].forEach((option) => {
    option.hidden = Boolean(option.value && RULE_OPS[kind] && !RULE_OPS[kind].includes(option.value));
  });
  if (op.selectedOptions[0] && op.selectedOptions[0].hidden) {
    op.value = RULE_OPS[kind][0];
  }
  const shown = (RULE_PARTS[kind] || []).filter((name) => !(name === "value" && op.value === "is_empty"));
  rule.querySelectorAll(".part[data-field]").forEach((box) => {
    const name = box.dataset.field;
    box.hidden = name !== "kind" && !shown.includes(name) && !box.classList.contains("invalid");
  });
}
document.addEventListener("change", (event) => {
  const rule = event.target.closest("fieldset.rule");
  if (rule && event.target.closest('[data-field="kind"], [data-field="op"]')) {
    showRuleParts(rule);
  }
});
document.addEventListener("DOMContentLoaded", () => document.querySelectorAll("fieldset.rule").forEach(showRuleParts));
