// The admin UI's only script: copy buttons and confirmations. Pages work without it.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy-button");
  if (!button) return;
  const input = document.getElementById(button.dataset.copy);
  if (!input) return;
  input.select();
  navigator.clipboard.writeText(input.value).then(
    () => { button.textContent = "Copied"; },
    () => { button.textContent = "Select and copy"; },
  );
});
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.matches("form.confirm") && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
