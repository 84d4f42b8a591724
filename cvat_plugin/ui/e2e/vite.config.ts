import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vite';

/** Builds the harness page (fake CVAT host + the plugin) into e2e/dist for the browser test. */
export default defineConfig({
    root: fileURLToPath(new URL('.', import.meta.url)),
    base: './',
    logLevel: 'warn',
    build: {
        outDir: 'dist',
        emptyOutDir: true,
        chunkSizeWarningLimit: 4096,
        rollupOptions: {
            input: fileURLToPath(new URL('harness.html', import.meta.url)),
            onwarn(warning, warn) {
                // antd marks its modules "use client" for React Server Components; meaningless in a bundle.
                if (warning.code !== 'MODULE_LEVEL_DIRECTIVE') warn(warning);
            },
        },
    },
});
