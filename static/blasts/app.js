// A button with data-confirm asks first (Send, Cancel, Resend unknown name how many people it touches);
// the form goes only if the person says yes.
document.addEventListener("submit", (event) => {
  const question = event.submitter && event.submitter.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
