// Secrets shown once (join tokens, access tokens) and the command nodes join with.
import { useState } from 'preact/hooks';
import { Button } from './ui';

/** A secret shown once, with a copy button (the clipboard may be unavailable: then nothing). */
export function Secret(props: { value: string; label: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <div class="secret-row">
      <code class="secret" data-testid="secret" aria-label={props.label}>
        {props.value}
      </code>
      <Button
        onClick={() => {
          try {
            navigator.clipboard?.writeText(props.value).then(
              () => setCopied(true),
              () => undefined,
            );
          } catch {
            // No clipboard here (plain http, old browser): the user selects the text instead.
          }
        }}
      >
        {copied ? 'Copied' : 'Copy'}
      </Button>
    </div>
  );
}

/** The command a node operator runs, the cluster's join token in FILE. */
export function joinCommand(): string {
  return `shoal node --manager ${location.origin} --token-file FILE`;
}
