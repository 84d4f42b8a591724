/**
 * The slice of CVAT's UI plugin API that this plugin uses, as types only, so the plugin
 * type-checks and tests without a CVAT checkout. Source: cvat-ui/src/components/plugins-entrypoint.tsx
 * and reducers/plugins-reducer.ts, CVAT 2.14.1 - 2.64.
 */

/** Payload of `ADD_UI_COMPONENT` / `REMOVE_UI_COMPONENT`; `path` is a dot path into `state.plugins.components`. */
export interface ComponentRegistration {
    path: string;
    component: unknown;
    data?: {
        weight?: number;
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        shouldBeRendered?: (props: any, state?: unknown) => boolean;
    };
}

export interface PluginAction {
    type: string;
    payload: ComponentRegistration;
}

/** What CVAT passes to a builder; newer versions add `actionCreators`, `core`, `store` and more. */
export interface BuilderArguments {
    dispatch: (action: PluginAction) => unknown;
    REGISTER_ACTION: string;
    REMOVE_ACTION: string;
    core?: unknown;
    store?: unknown;
    actionCreators?: unknown;
}

export interface PluginEntry {
    name: string;
    destructor: () => void;
    globalStateDidUpdate?: (state: unknown) => void;
}

export type ComponentBuilder = (args: BuilderArguments) => PluginEntry;

/** `window.cvatUI`, defined by CVAT just before it fires `plugins.ready`. */
export interface CvatUI {
    registerComponent(builder: ComponentBuilder): void;
}

/**
 * Props a task Actions item is called with: CVAT >= 2.32 passes the task as `taskInstance`,
 * 2.14.1 - 2.31 pass only `taskID` (and `taskDimension`).
 */
export interface TaskActionsTargetProps {
    taskInstance?: { id: number; dimension?: string };
    taskID?: number;
    taskDimension?: string;
}

/**
 * Props a project Actions item is called with: the project as `projectInstance`; CVAT >= 2.32 also
 * passes the dropdown's `triggerElement` (and wants an antd items object back).
 */
export interface ProjectActionsTargetProps {
    projectInstance?: { id: number; dimension?: string | null };
    triggerElement?: unknown;
}
