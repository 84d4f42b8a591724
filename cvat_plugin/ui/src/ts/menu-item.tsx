/**
 * The "Train DETR" task and project Actions items. CVAT calls them as plain functions,
 * Component({key, targetProps}), not as React components, so they must not use hooks. CVAT >= 2.32
 * wants an antd items object and passes the task as `taskInstance`; 2.14.1 - 2.31 want a <Menu.Item>
 * and pass `taskID`. Project menus pass the project as `projectInstance`.
 */
import React from 'react';
import { Menu } from 'antd';

import { ProjectActionsTargetProps, TaskActionsTargetProps } from './cvat-types';
import { openTrainDialog } from './dialog-root';

export const MENU_KEY = 'train_detr';
export const MENU_LABEL = 'Train DETR';

export interface MenuItemObject {
    key: string;
    label: string;
    onClick: () => void;
}

function taskIdOf(props: TaskActionsTargetProps | undefined): number | undefined {
    const id = props?.taskInstance?.id ?? props?.taskID;
    return typeof id === 'number' ? id : undefined;
}

/** DETR detects boxes in images; 3D (point cloud) tasks get no item. */
export function shouldRenderTrainDetr(props: TaskActionsTargetProps | undefined): boolean {
    return (props?.taskInstance?.dimension ?? props?.taskDimension) !== '3d' && taskIdOf(props) !== undefined;
}

interface ItemProps {
    key?: number | string;
    targetProps?: TaskActionsTargetProps;
}

export function TrainDetrItem({ targetProps }: ItemProps): MenuItemObject | JSX.Element | null {
    const taskId = taskIdOf(targetProps);
    if (taskId === undefined) return null;
    const onClick = (): void => openTrainDialog({ kind: 'task', id: taskId });
    if (targetProps && 'taskInstance' in targetProps) {
        return { key: MENU_KEY, label: MENU_LABEL, onClick };
    }
    return <Menu.Item key={MENU_KEY} onClick={onClick}>{MENU_LABEL}</Menu.Item>;
}

/** Projects of images get the item; 3D projects (point clouds) do not. */
export function shouldRenderTrainDetrOnProject(props: ProjectActionsTargetProps | undefined): boolean {
    return typeof props?.projectInstance?.id === 'number' && props.projectInstance.dimension !== '3d';
}

interface ProjectItemProps {
    key?: number | string;
    targetProps?: ProjectActionsTargetProps;
}

/** Trains on all the project's tasks; their Train / Validation subsets split them. */
export function TrainDetrProjectItem({ targetProps }: ProjectItemProps): MenuItemObject | JSX.Element | null {
    const projectId = targetProps?.projectInstance?.id;
    if (typeof projectId !== 'number') return null;
    const onClick = (): void => openTrainDialog({ kind: 'project', id: projectId });
    if (targetProps && 'triggerElement' in targetProps) {
        return { key: MENU_KEY, label: MENU_LABEL, onClick };
    }
    return <Menu.Item key={MENU_KEY} onClick={onClick}>{MENU_LABEL}</Menu.Item>;
}
