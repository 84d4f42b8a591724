/**
 * A stand-in for CVAT's UI around the plugin, for the browser test. It defines `window.cvatUI` as
 * cvat-ui/src/components/plugins-entrypoint.tsx does, keeps registered components the way
 * plugins-reducer.ts does (throwing for an unknown path), fires `plugins.ready`, and renders a task
 * page whose Actions menu calls the registered taskActions items as plain functions:
 *   default             CVAT >= 2.32: antd items objects, `targetProps.taskInstance`
 *   ?contract=menu-item CVAT 2.14.1 - 2.31: <Menu.Item> children, `targetProps.taskID`
 * ?task=<id> picks the task (default 42).
 */
import React, { useState, useSyncExternalStore } from 'react';
import { createRoot } from 'react-dom/client';
import { Button, Dropdown, Layout, Menu, Typography } from 'antd';
import type { MenuProps } from 'antd';

import '../src/ts/index';
import type { ComponentBuilder, PluginAction, TaskActionsTargetProps } from '../src/ts/cvat-types';

type ItemComponent = (props: { key: number; targetProps: TaskActionsTargetProps }) => unknown;

interface Entry {
    component: ItemComponent;
    weight: number;
    shouldBeRendered: (props: TaskActionsTargetProps) => boolean;
}

const REGISTER_ACTION = 'ADD_UI_COMPONENT';
const REMOVE_ACTION = 'REMOVE_UI_COMPONENT';
const components: Record<string, Entry[]> = { 'taskActions.items': [], 'projectActions.items': [] };
const listeners = new Set<() => void>();
let version = 0;

function dispatch({ type, payload }: PluginAction): void {
    const entries = components[payload.path];
    if (!Array.isArray(entries)) throw new Error('Could not add plugin component. Target path is not array');
    if (type === REGISTER_ACTION) {
        entries.push({
            component: payload.component as ItemComponent,
            weight: payload.data?.weight || Number.MAX_SAFE_INTEGER,
            shouldBeRendered: payload.data?.shouldBeRendered ?? (() => true),
        });
    } else if (type === REMOVE_ACTION) {
        components[payload.path] = entries.filter((entry) => entry.component !== payload.component);
    }
    version += 1;
    listeners.forEach((listener) => listener());
}

Object.defineProperty(window, 'cvatUI', {
    value: Object.freeze({
        registerComponent(builder: ComponentBuilder): void {
            const { name } = builder({ dispatch, REGISTER_ACTION, REMOVE_ACTION, core: {}, actionCreators: {}, store: {} });
            document.dispatchEvent(new CustomEvent('plugins.registered', { bubbles: true, detail: { name } }));
        },
    }),
    writable: false,
    configurable: false,
});

const params = new URLSearchParams(window.location.search);
const taskId = Number(params.get('task') ?? 42);
const legacyContract = params.get('contract') === 'menu-item';

const BUILT_IN: [number, string][] = [
    [0, 'Upload annotations'], [10, 'Export task dataset'], [30, 'Automatic annotation'], [40, 'Backup task'],
    [110, 'Delete'],
];

function usePluginItems(targetProps: TaskActionsTargetProps): [number, unknown][] {
    useSyncExternalStore((listener) => {
        listeners.add(listener);
        return () => listeners.delete(listener);
    }, () => version);
    return components['taskActions.items']
        .filter((entry) => entry.shouldBeRendered(targetProps))
        .map((entry, index) => [entry.weight, entry.component({ key: index, targetProps })]);
}

function byWeight<T>(items: [number, T][]): T[] {
    return [...items].sort((a, b) => a[0] - b[0]).map(([, item]) => item);
}

/** CVAT >= 2.32 (components/tasks-page/actions-menu-items.tsx and TaskActionsComponent). */
function ItemsMenu(): JSX.Element {
    const [open, setOpen] = useState(false);
    const plugins = usePluginItems({ taskInstance: { id: taskId, dimension: '2d' } });
    const items = byWeight<unknown>([...BUILT_IN.map(([weight, label]): [number, unknown] => [weight, { key: label, label }]), ...plugins]);
    return (
        <Dropdown
            open={open}
            onOpenChange={setOpen}
            trigger={['click']}
            destroyPopupOnHide
            menu={{ items: items as MenuProps['items'], onClick: () => setOpen(false) }}
        >
            <Button type='link' size='large'>Actions</Button>
        </Dropdown>
    );
}

/** CVAT 2.14.1 - 2.31 (components/actions-menu/actions-menu.tsx). */
function ChildrenMenu(): JSX.Element {
    const [open, setOpen] = useState(false);
    const plugins = usePluginItems({ taskID: taskId, taskDimension: '2d' });
    const children = byWeight<unknown>([
        ...BUILT_IN.map(([weight, label]): [number, unknown] => [weight, <Menu.Item key={label}>{label}</Menu.Item>]),
        ...plugins,
    ]);
    return (
        <Dropdown
            open={open}
            onOpenChange={setOpen}
            trigger={['click']}
            dropdownRender={() => (
                <Menu selectable={false} onClick={() => setOpen(false)}>{children as React.ReactNode}</Menu>
            )}
        >
            <Button type='link' size='large'>Actions</Button>
        </Dropdown>
    );
}

function TaskPage(): JSX.Element {
    return (
        <Layout style={{ minHeight: '100vh' }}>
            <Layout.Header style={{ color: '#fff', fontWeight: 600 }}>CVAT (plugin harness)</Layout.Header>
            <Layout.Content style={{ padding: 24 }}>
                <Typography.Title level={4}>{`Task #${taskId}: street scenes`}</Typography.Title>
                <Typography.Paragraph type='secondary'>
                    {legacyContract ? 'Actions menu as in CVAT 2.14.1 - 2.31' : 'Actions menu as in CVAT 2.32 and newer'}
                </Typography.Paragraph>
                {legacyContract ? <ChildrenMenu /> : <ItemsMenu />}
            </Layout.Content>
        </Layout>
    );
}

createRoot(document.getElementById('root') as HTMLElement).render(<TaskPage />);
// CVAT fires the event on document from a timeout after defining window.cvatUI; it bubbles to window.
setTimeout(() => document.dispatchEvent(new CustomEvent('plugins.ready', { bubbles: true })));
