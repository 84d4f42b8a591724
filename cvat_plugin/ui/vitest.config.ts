import { defineConfig } from 'vitest/config';

export default defineConfig({
    resolve: {
        // antd 5.17's CommonJS build requires extension-less ESM files of rc-util, which Node rejects;
        // its ES build, inlined below, goes through Vite instead.
        alias: [{ find: /^antd$/, replacement: 'antd/es/index.js' }],
    },
    test: {
        environment: 'jsdom',
        globals: true,
        testTimeout: 30000,
        include: ['tests/**/*.test.ts?(x)'],
        setupFiles: ['./tests/setup.ts'],
        server: { deps: { inline: [/\/antd\//, /\/@ant-design\//, /\/rc-[^/]+\//, /\/@rc-component\//] } },
    },
});
