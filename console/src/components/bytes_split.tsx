// Bytes from peers and seeds against bytes from the upstream: the origin offload.
import { bytes, percent } from '../format';

export function BytesSplit(props: { peer: number; upstream: number }) {
  const total = props.peer + props.upstream;
  const p = total ? (props.peer / total) * 100 : 0;
  return (
    <div>
      <div class="split" role="img" aria-label={`${bytes(props.peer)} from peers, ${bytes(props.upstream)} from upstream`}>
        <div class="peers" style={{ width: `${p}%` }} />
        <div class="upstream" style={{ width: `${total ? 100 - p : 0}%` }} />
      </div>
      <div class="legend">
        <span>
          <i style={{ background: 'var(--peers)' }} />
          peers {bytes(props.peer)}
        </span>
        <span>
          <i style={{ background: 'var(--upstream)' }} />
          upstream {bytes(props.upstream)}
        </span>
        {total > 0 && <span>offload {percent(props.peer / total)}</span>}
      </div>
    </div>
  );
}
