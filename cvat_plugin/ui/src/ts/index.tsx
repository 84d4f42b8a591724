/**
 * CVAT UI plugin entry (built into CVAT's UI through CLIENT_PLUGINS): adds "Train DETR" to the task
 * and project Actions menus when CVAT fires `plugins.ready`.
 */
import { ComponentBuilder, ComponentRegistration, CvatUI } from './cvat-types';
import { unmountTrainDialog } from './dialog-root';
import {
    shouldRenderTrainDetr, shouldRenderTrainDetrOnProject, TrainDetrItem, TrainDetrProjectItem,
} from './menu-item';

export const PLUGIN_NAME = 'Train DETR';
export const TASK_ACTIONS_PATH = 'taskActions.items';
export const PROJECT_ACTIONS_PATH = 'projectActions.items';
/** Right after "Automatic annotation" (weight 30) in every CVAT task layout. */
export const MENU_WEIGHT = 35;

export const REGISTRATIONS: ComponentRegistration[] = [
    { path: TASK_ACTIONS_PATH, component: TrainDetrItem, data: { weight: MENU_WEIGHT, shouldBeRendered: shouldRenderTrainDetr } },
    {
        path: PROJECT_ACTIONS_PATH,
        component: TrainDetrProjectItem,
        data: { weight: MENU_WEIGHT, shouldBeRendered: shouldRenderTrainDetrOnProject },
    },
];

export const trainDetrBuilder: ComponentBuilder = ({ dispatch, REGISTER_ACTION, REMOVE_ACTION }) => {
    const registered: ComponentRegistration[] = [];
    for (const payload of REGISTRATIONS) {
        try {
            dispatch({ type: REGISTER_ACTION, payload });
            registered.push(payload);
        } catch (error) {
            // CVAT's reducer throws for a path this version lacks; the rest of the UI must keep working.
            console.warn(`${PLUGIN_NAME}: this CVAT version has no '${payload.path}' plugin point`, error);
        }
    }
    return {
        name: PLUGIN_NAME,
        destructor: () => {
            for (const { path, component } of registered) {
                dispatch({ type: REMOVE_ACTION, payload: { path, component } });
            }
            unmountTrainDialog();
        },
    };
};

export function registerTrainDetr(): void {
    const cvatUI = (window as Window & { cvatUI?: CvatUI }).cvatUI;
    if (cvatUI) {
        cvatUI.registerComponent(trainDetrBuilder);
    } else {
        console.warn(`${PLUGIN_NAME}: window.cvatUI is missing; is this CVAT 2.14.1 or newer?`);
    }
}

window.addEventListener('plugins.ready', registerTrainDetr, { once: true });
