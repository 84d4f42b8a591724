import React from 'react';
import { act, render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { Menu } from 'antd';

import { unmountTrainDialog } from '../src/ts/dialog-root';
import {
    MenuItemObject, shouldRenderTrainDetr, shouldRenderTrainDetrOnProject, TrainDetrItem, TrainDetrProjectItem,
} from '../src/ts/menu-item';
import { fakeFetch, json } from './fake-fetch';
import { makeSummary } from './fixtures';

type IndexModule = typeof import('../src/ts/index');

/** Imports the entry fresh (it listens for plugins.ready on import) with a CVAT-like window.cvatUI. */
async function loadEntry(): Promise<{ entry: IndexModule; registerComponent: ReturnType<typeof vi.fn> }> {
    vi.resetModules();
    const registerComponent = vi.fn();
    Object.defineProperty(window, 'cvatUI', { value: { registerComponent }, configurable: true });
    const entry = await import('../src/ts/index');
    return { entry, registerComponent };
}

function firePluginsReady(): void {
    // CVAT dispatches it on document; it bubbles to window, where plugins listen.
    document.dispatchEvent(new CustomEvent('plugins.ready', { bubbles: true }));
}

function builderArgs(dispatch = vi.fn()): { dispatch: typeof dispatch; REGISTER_ACTION: string; REMOVE_ACTION: string } {
    return { dispatch, REGISTER_ACTION: 'ADD_UI_COMPONENT', REMOVE_ACTION: 'REMOVE_UI_COMPONENT' };
}

describe('registration with CVAT', () => {
    afterEach(() => {
        act(() => unmountTrainDialog());
        vi.unstubAllGlobals();
    });

    it('registers once, on plugins.ready, through window.cvatUI', async () => {
        const { entry, registerComponent } = await loadEntry();
        expect(registerComponent).not.toHaveBeenCalled();

        firePluginsReady();
        firePluginsReady();
        expect(registerComponent).toHaveBeenCalledTimes(1);
        expect(registerComponent).toHaveBeenCalledWith(entry.trainDetrBuilder);
    });

    it('adds the item to taskActions.items after Automatic annotation, and removes it again', async () => {
        const { entry } = await loadEntry();
        // The same module instances the fresh entry imported.
        const { shouldRenderTrainDetr, TrainDetrItem } = await import('../src/ts/menu-item');
        const args = builderArgs();
        const plugin = entry.trainDetrBuilder(args);

        expect(plugin.name).toBe('Train DETR');
        expect(args.dispatch).toHaveBeenCalledWith({
            type: 'ADD_UI_COMPONENT',
            payload: {
                path: 'taskActions.items',
                component: TrainDetrItem,
                data: { weight: 35, shouldBeRendered: shouldRenderTrainDetr },
            },
        });
        const { shouldRenderTrainDetrOnProject, TrainDetrProjectItem } = await import('../src/ts/menu-item');
        expect(args.dispatch).toHaveBeenCalledWith({
            type: 'ADD_UI_COMPONENT',
            payload: {
                path: 'projectActions.items',
                component: TrainDetrProjectItem,
                data: { weight: 35, shouldBeRendered: shouldRenderTrainDetrOnProject },
            },
        });
        plugin.destructor();
        expect(args.dispatch).toHaveBeenCalledWith({
            type: 'REMOVE_UI_COMPONENT', payload: { path: 'taskActions.items', component: TrainDetrItem },
        });
        expect(args.dispatch).toHaveBeenLastCalledWith({
            type: 'REMOVE_UI_COMPONENT', payload: { path: 'projectActions.items', component: TrainDetrProjectItem },
        });
    });

    it('leaves CVAT working when this version lacks the plugin point', async () => {
        const { entry } = await loadEntry();
        const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
        const dispatch = vi.fn(() => {
            throw new Error('Could not add plugin component. Target path is not array');
        });

        expect(() => entry.trainDetrBuilder(builderArgs(dispatch)).destructor()).not.toThrow();
        expect(dispatch).toHaveBeenCalledTimes(2); // one try per plugin point, nothing to remove
        expect(warn).toHaveBeenCalledWith(expect.stringContaining("no 'taskActions.items' plugin point"), expect.any(Error));
    });
});

describe('the Train DETR menu item', () => {
    beforeEach(() => {
        vi.stubGlobal('fetch', fakeFetch({
            'GET /tasks/42/summary': json(200, makeSummary()),
            'GET /jobs?task=42': json(200, { jobs: [] }),
        }));
    });
    afterEach(() => {
        act(() => unmountTrainDialog());
        vi.unstubAllGlobals();
    });

    it('is an antd items object on CVAT >= 2.32 and opens the dialog for taskInstance.id', async () => {
        const item = TrainDetrItem({ key: 3, targetProps: { taskInstance: { id: 42 } } }) as MenuItemObject;

        expect(item).toEqual({ key: 'train_detr', label: 'Train DETR', onClick: expect.any(Function) });
        act(() => item.onClick());
        expect(await screen.findByText('Train DETR: street scenes')).toBeInTheDocument();
        expect(document.getElementById('detr-plugin-root')).not.toBeNull();
    });

    it('is a <Menu.Item> on CVAT 2.14.1 - 2.31 and opens the dialog for taskID', async () => {
        const user = userEvent.setup();
        const element = TrainDetrItem({ key: 3, targetProps: { taskID: 42 } });

        expect(React.isValidElement(element)).toBe(true);
        render(<Menu>{element as JSX.Element}</Menu>);
        await user.click(screen.getByRole('menuitem', { name: 'Train DETR' }));
        expect(await screen.findByText('Train DETR: street scenes')).toBeInTheDocument();
    });

    it('opens the dialog for a project from the project Actions menu', async () => {
        vi.stubGlobal('fetch', fakeFetch({
            'GET /projects/7/summary': json(200, makeSummary({
                task: undefined,
                project: { id: 7, name: 'streets', frames: 12, tasks: [{ id: 3, name: 'day', subset: 'Train', frames: 12 }] },
            })),
            'GET /jobs?project=7': json(200, { jobs: [] }),
        }));
        const item = TrainDetrProjectItem({ key: 1, targetProps: { projectInstance: { id: 7 }, triggerElement: null } }) as MenuItemObject;

        expect(item).toEqual({ key: 'train_detr', label: 'Train DETR', onClick: expect.any(Function) });
        act(() => item.onClick());
        expect(await screen.findByText('Train DETR: streets')).toBeInTheDocument();
        expect(screen.getByText(/day: Train\. Tasks in the Train and Validation subsets are used as such/)).toBeInTheDocument();
        expect(screen.getByText('96 of 12 frames annotated, 309 boxes:')).toBeInTheDocument();
        expect(shouldRenderTrainDetrOnProject({ projectInstance: { id: 7, dimension: '3d' } })).toBe(false);
        expect(React.isValidElement(TrainDetrProjectItem({ targetProps: { projectInstance: { id: 7 } } }))).toBe(true);
    });

    it('is hidden for 3D tasks and without a task id', () => {
        expect(shouldRenderTrainDetr({ taskInstance: { id: 1, dimension: '2d' } })).toBe(true);
        expect(shouldRenderTrainDetr({ taskInstance: { id: 1, dimension: '3d' } })).toBe(false);
        expect(shouldRenderTrainDetr({ taskID: 1, taskDimension: '3d' })).toBe(false);
        expect(shouldRenderTrainDetr({})).toBe(false);
        expect(TrainDetrItem({ targetProps: {} })).toBeNull();
    });
});
