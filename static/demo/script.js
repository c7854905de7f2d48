// Registered once per push of this script; `data` pushes then update the
// numbers, the trace and the checklist without re-rendering the page.
var points = [];
workbench.on('data', function (d) {
  if (d.volts !== undefined) {
    document.getElementById('volts').textContent = d.volts.toFixed(3);
    document.getElementById('amps').textContent = d.amps.toFixed(3);
    points.push(d.volts);
    if (points.length > 120) points.shift();
    var lo = 4.97, hi = 5.03;
    document.getElementById('trace').setAttribute('points', points.map(function (v, i) {
      var y = 100 - (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo) * 100;
      return (i * 300 / 119).toFixed(1) + ',' + y.toFixed(1);
    }).join(' '));
    document.getElementById('vmin').textContent = Math.min.apply(null, points).toFixed(3);
    document.getElementById('vmax').textContent = Math.max.apply(null, points).toFixed(3);
  }
  (d.steps_done || []).forEach(function (n) {
    var li = document.querySelector('.steps li[data-step="' + n + '"]');
    if (li) li.classList.add('done');
  });
  if (d.answers) {
    var box = document.getElementById('answers');
    box.textContent = '';
    d.answers.forEach(function (a) { var div = document.createElement('div'); div.textContent = a; box.appendChild(div); });
  }
});
