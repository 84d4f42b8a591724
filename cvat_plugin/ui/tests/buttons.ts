/**
 * Buttons by their text. Testing Library's role queries compute accessible names through jsdom's
 * getComputedStyle, which takes a second or more per query under antd's injected styles.
 */
import { waitFor, within } from '@testing-library/react';

export function queryButton(name: string, container: HTMLElement = document.body): HTMLButtonElement | null {
    const buttons = within(container).queryAllByText(name).map((element) => element.closest('button'));
    return buttons.find((button): button is HTMLButtonElement => button !== null) ?? null;
}

export function getButton(name: string, container: HTMLElement = document.body): HTMLButtonElement {
    const button = queryButton(name, container);
    if (!button) throw new Error(`no button labelled ${JSON.stringify(name)}`);
    return button;
}

export function findButton(name: string, container: HTMLElement = document.body): Promise<HTMLButtonElement> {
    return waitFor(() => getButton(name, container));
}
