// A uPlot line chart in a Preact component: made on mount, resized with its box, destroyed on
// unmount. uPlot's own legend is off (our legend is plain HTML, and the data is also a table).
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { tickDigits } from './format';

export interface Line {
  label: string;
  color: string;
  values: number[];
  dash?: number[];
}

export function LineChart({ x, lines, label, height = 260 }: { x: number[]; lines: Line[]; label: string; height?: number }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth - 16),
      height,
      legend: { show: false },
      scales: { x: { time: true } },
      axes: [
        {},
        {
          // as many decimals as the tick step needs: GPU seconds cost fractions of a cent
          values: (_u, ticks, _axis, _space, step) => ticks.map((t) => `$${t.toFixed(tickDigits(step))}`),
          size: 80,
        },
      ],
      series: [{}, ...lines.map((l) => ({ label: l.label, stroke: l.color, width: 2, dash: l.dash, points: { show: true } }))],
    };
    const plot = new uPlot(opts, [x, ...lines.map((l) => l.values)] as uPlot.AlignedData, el);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(200, el.clientWidth - 16), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [x, lines, height]);
  return (
    <figure class="admin-chart-fig">
      <div ref={box} class="admin-chart" role="img" aria-label={label} data-testid="pnl-chart" />
      <figcaption>
        <ul class="admin-legend">
          {lines.map((l) => (
            <li key={l.label}>
              <span class="swatch" style={{ background: l.color }} aria-hidden="true" /> {l.label}
            </li>
          ))}
        </ul>
      </figcaption>
    </figure>
  );
}
