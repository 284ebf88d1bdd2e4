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
