// A small Preact wrapper around Chart.js: only the parts the console draws are registered (the
// rest is left out of the bundle), the chart follows its data, the theme's colours come from the
// CSS variables (so dark mode works), and the chart is destroyed with its component.
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart as ChartJS,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  ScatterController,
  Tooltip,
  type ChartData,
  type ChartOptions,
  type ChartType,
} from 'chart.js';
import { useEffect, useRef, useState } from 'preact/hooks';

ChartJS.register(
  BarController,
  BarElement,
  CategoryScale,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  ScatterController,
  Tooltip,
);

/** The theme's colours, as the CSS variables give them now. */
export interface Colors {
  peers: string;
  upstream: string;
  accent: string;
  ok: string;
  bad: string;
  warn: string;
  text: string;
  muted: string;
  line: string;
}

function readColors(): Colors {
  const s = getComputedStyle(document.documentElement);
  const v = (name: string, fallback: string) => s.getPropertyValue(name).trim() || fallback;
  return {
    peers: v('--peers', '#0b6bcb'),
    upstream: v('--upstream', '#d9822b'),
    accent: v('--accent', '#0b6bcb'),
    ok: v('--ok', '#1a7f37'),
    bad: v('--bad', '#c62828'),
    warn: v('--warn', '#b35900'),
    text: v('--text', '#1d2330'),
    muted: v('--muted', '#5d6678'),
    line: v('--line', '#dde1e8'),
  };
}

/** The theme's colours, read again when the colour scheme changes. */
export function useColors(): Colors {
  const [colors, setColors] = useState<Colors>(readColors);
  useEffect(() => {
    const m = matchMedia('(prefers-color-scheme: dark)');
    const f = () => setColors(readColors());
    m.addEventListener('change', f);
    return () => m.removeEventListener('change', f);
  }, []);
  return colors;
}

/** A `#rgb` or `#rrggbb` colour made partly transparent (`alpha` 0 to 1), for fills. */
export function fade(color: string, alpha: number): string {
  let hex = color.startsWith('#') ? color.slice(1) : '';
  if (hex.length === 3) hex = [...hex].map((c) => c + c).join('');
  if (!/^[0-9a-f]{6}$/i.test(hex)) return color;
  const n = parseInt(hex, 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

export interface ChartProps<T extends ChartType> {
  type: T;
  data: ChartData<T>;
  options?: ChartOptions<T>;
  /** What the chart shows, for screen readers (the canvas' aria-label). */
  label: string;
  /** Height in pixels (the width follows the container). */
  height?: number;
}

/** A chart in a `.chart` box; it redraws when `data` or `options` change. */
export function Chart<T extends ChartType>(props: ChartProps<T>) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<ChartJS<T> | null>(null);
  const colors = useColors();

  // Axis, grid and legend colours for every chart, from the theme.
  const themed = (): ChartOptions<T> => {
    ChartJS.defaults.color = colors.muted;
    ChartJS.defaults.borderColor = colors.line;
    ChartJS.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      ...props.options,
    } as ChartOptions<T>;
  };

  // Created once per chart type, destroyed on unmount.
  useEffect(() => {
    if (!canvas.current) return;
    chart.current = new ChartJS<T>(canvas.current, { type: props.type, data: props.data, options: themed() });
    return () => {
      chart.current?.destroy();
      chart.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [props.type]);

  // New data, options or colours: the same chart, redrawn.
  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    c.data = props.data;
    c.options = themed();
    c.update('none');
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [props.data, props.options, colors]);

  return (
    <div class="chart" style={props.height ? { height: `${props.height}px` } : undefined}>
      <canvas ref={canvas} role="img" aria-label={props.label} />
    </div>
  );
}
