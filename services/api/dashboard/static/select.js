// A "select all" box (class select-all, data-select=GROUP) ticks or clears every box of its group
// (data-select-group=GROUP), and shows "some" when only part of the group is ticked.
document.addEventListener("change", (event) => {
  const box = event.target;
  if (!(box instanceof HTMLInputElement) || box.type !== "checkbox") return;
  if (box.classList.contains("select-all")) {
    for (const item of document.querySelectorAll(`input[data-select-group="${box.dataset.select}"]`)) {
      item.checked = box.checked;
    }
    box.indeterminate = false;
    return;
  }
  const group = box.dataset.selectGroup;
  const all = group && document.querySelector(`input.select-all[data-select="${group}"]`);
  if (!all) return;
  const items = [...document.querySelectorAll(`input[data-select-group="${group}"]`)];
  const ticked = items.filter((item) => item.checked).length;
  all.checked = ticked === items.length;
  all.indeterminate = ticked > 0 && ticked < items.length;
});
