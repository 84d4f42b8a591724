import '@testing-library/jest-dom/vitest';
import { cleanup, configure } from '@testing-library/react';

// Role queries skip the visibility check, which calls jsdom's slow getComputedStyle on every
// ancestor (seconds per query under antd's injected styles); the 2-core CI machine gets time.
configure({ defaultHidden: true, asyncUtilTimeout: 5000 });

afterEach(() => {
    cleanup();
    document.cookie.split(';').forEach((part) => {
        const name = part.split('=')[0].trim();
        if (name) document.cookie = `${name}=; expires=Thu, 01 Jan 1970 00:00:00 GMT`;
    });
});

// antd reads media queries (responsive grid, Descriptions); jsdom has no matchMedia.
Object.defineProperty(window, 'matchMedia', {
    writable: true,
    value: (query: string) => ({
        matches: false,
        media: query,
        onchange: null,
        addListener: () => undefined,
        removeListener: () => undefined,
        addEventListener: () => undefined,
        removeEventListener: () => undefined,
        dispatchEvent: () => false,
    }),
});

// jsdom implements getComputedStyle without pseudo-elements and says so on every antd render.
const getComputedStyle = window.getComputedStyle.bind(window);
window.getComputedStyle = (element: Element) => getComputedStyle(element);
