// The 7-day chart (uPlot): stacked bars of succeeded / partial / failed / cancelled per day.

import uPlot from '/web/vendor/uplot/uPlot.esm.js';

const SERIES = [
  { key: 'success', label: 'Succeeded', colour: '#1a7f37' },
  { key: 'partial', label: 'Partial', colour: '#b7791f' },
  { key: 'failed', label: 'Failed', colour: '#c62828' },
  { key: 'cancelled', label: 'Cancelled', colour: '#6b7280' },
];
const DAY = 86_400;

function dayStart(day) {
  return Date.parse(`${day}T00:00:00Z`) / 1000;
}

/** Build the chart in `node` from daily figures; returns {update(daily), destroy()}. */
export function dailyChart(node, daily, { dark = false } = {}) {
  const stacked = (figures) => {
    const xs = figures.map((d) => dayStart(d.day));
    let running = figures.map(() => 0);
    const cumulative = SERIES.map((s) => {
      running = running.map((sum, i) => sum + (figures[i][s.key] || 0));
      return running.slice();
    });
    // uPlot draws later series on top: the tallest (cumulative) first, so each shows its own band
    return [xs, ...cumulative.reverse()];
  };
  let figures = daily;
  const raw = (seriesIndex, i) => {
    const key = SERIES[SERIES.length - seriesIndex].key;
    return figures[i] ? figures[i][key] : null;
  };
  const bars = uPlot.paths.bars({ size: [0.6, 80] });
  const axisColour = dark ? '#cbd5e1' : '#374151';
  const gridColour = dark ? '#334155' : '#e5e7eb';
  const options = {
    width: Math.max(320, node.clientWidth || 640),
    height: 260,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    scales: {
      x: { time: true, range: (u, min, max) => [min - DAY / 2, max + DAY / 2] },
      y: { range: (u, min, max) => [0, Math.max(4, Math.ceil(max * 1.15))] },
    },
    axes: [
      { stroke: axisColour, grid: { stroke: gridColour }, values: '{MM}-{DD}', space: 40, incrs: [DAY] },
      { stroke: axisColour, grid: { stroke: gridColour }, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000] },
    ],
    series: [
      { label: 'Day', value: (u, ts) => (ts === null ? '' : new Date(ts * 1000).toISOString().slice(0, 10)) },
      ...SERIES.slice().reverse().map((s, index) => ({
        label: s.label,
        fill: s.colour,
        stroke: s.colour,
        width: 0,
        paths: bars,
        points: { show: false },
        value: (u, v, seriesIndex, i) => (i === null || i === undefined ? '' : raw(index + 1, i)),
      })),
    ],
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
  };
  const plot = new uPlot(options, stacked(figures), node);
  const resize = () => plot.setSize({ width: Math.max(320, node.clientWidth), height: 260 });
  const observer = new ResizeObserver(resize);
  observer.observe(node);
  return {
    update(next) {
      figures = next;
      plot.setData(stacked(next));
    },
    destroy() {
      observer.disconnect();
      plot.destroy();
    },
  };
}
