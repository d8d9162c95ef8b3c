import { defineConfig } from 'vite';

// The console is built into dist/, which `shoal manager` embeds and serves at `/`.
// Everything it needs is bundled: no fonts, scripts or styles come from the network.
export default defineConfig({
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    // `npm run dev` against a manager on the default port.
    proxy: { '/api': 'http://127.0.0.1:8080' },
  },
});
