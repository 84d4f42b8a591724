/**
 * CVAT >= 2.19 has no plugin point for modals and unmounts menu labels when the menu closes, so
 * the dialog lives in its own React root under document.body.
 */
import React from 'react';
import { createRoot, Root } from 'react-dom/client';

import { createGatewayClient, GatewayClient } from './api';
import { Source } from './gateway-types';
import { TrainDialog } from './train-dialog';

export const ROOT_ID = 'detr-plugin-root';

let root: Root | null = null;
let opened = 0;

function ensureRoot(): Root {
    if (!root) {
        let host = document.getElementById(ROOT_ID);
        if (!host) {
            host = document.createElement('div');
            host.id = ROOT_ID;
            document.body.appendChild(host);
        }
        root = createRoot(host);
    }
    return root;
}

export function closeTrainDialog(): void {
    root?.render(null);
}

/** Opens a fresh dialog for the task or project (replacing an open one), which picks up a running job itself. */
export function openTrainDialog(source: Source, client: GatewayClient = createGatewayClient()): void {
    opened += 1;
    ensureRoot().render(<TrainDialog key={opened} source={source} client={client} onClose={closeTrainDialog} />);
}

/** Removes the root entirely (plugin destructor). */
export function unmountTrainDialog(): void {
    root?.unmount();
    root = null;
    document.getElementById(ROOT_ID)?.remove();
}
